"""Numeric precision of the image encoder at inference (``evaluate.seg.precision``).

- ``fp32``: the reference; outputs match the original implementation.
- ``bf16-matmul``: fp32 everywhere except that matrix products round their inputs to bf16 and accumulate
  in fp32 (``torch.set_float32_matmul_precision("medium")``: oneDNN/AMX on CPUs that have it). Labels agree
  with fp32 on 99.86 % of pixels in BENCHMARKS.md's measurement; ~1.5× faster on an AMX CPU.
- ``bf16``: autocast (activations in bf16 too): fastest (~2× on an AMX CPU), least exact (99.81 %).
"""

from __future__ import annotations

import contextlib
from typing import get_args

import torch

from ..config import InferencePrecision
from ..errors import ConfigError

PRECISIONS = get_args(InferencePrecision)


@contextlib.contextmanager
def inference_precision(precision: str, device: torch.device):
    """Run the enclosed forward passes at ``precision``; restores the global matmul setting afterwards."""
    if precision not in PRECISIONS:
        raise ConfigError(f"evaluate.seg.precision: expected one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "bf16-matmul":
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("medium")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)
    else:
        yield
