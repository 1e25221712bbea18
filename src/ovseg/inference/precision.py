"""Numeric precision of the image encoder at inference (``evaluate.seg.precision``).

- ``auto`` (default): the fastest path whose label maps agree with fp32 on at least 99.9 % of the pixels of
  BENCHMARKS.md's photo set (the paper's ViT-B/BERT). On a CPU: fp32 with the ViT's linear layers through
  oneDNN, bias and GELU fused (the same fp32 arithmetic in another summation order; the harness 1.3x
  faster where MKL's sgemm is slow, as on AMD; labels equal to ``fp32`` on every photo measured). bf16
  products would be used on CPUs with native bf16 whose recorded agreement reaches 99.9 %; none does so far
  (``BF16_AGREEMENT``), so ``auto`` is fp32 everywhere. On a GPU: ``fp32``.
- ``fp32``: the reference arithmetic; outputs match the original implementation. ``verify-reference`` always
  runs it.
- ``bf16-matmul``: ``torch.set_float32_matmul_precision("medium")``: oneDNN may round matrix-product inputs to
  bf16 with fp32 accumulation. It does so on AMX CPUs (99.86 % of labels equal to fp32); on AVX-512 BF16
  without AMX, oneDNN keeps fp32 kernels (its ``fpmath`` hint applies to AMX only), so it is ``auto``'s speed.
- ``bf16``: autocast (activations in bf16 too): the fastest on GPUs and AMX, least exact (99.42 % on AVX-512
  BF16).

The bf16 choices need a CPU with native bf16 (AMX or AVX-512 BF16); elsewhere they are refused in one line.
"""

from __future__ import annotations

import contextlib
import functools
from typing import get_args

import torch

from ..config import InferencePrecision
from ..errors import ConfigError
from ..model.layers import onednn_linears

PRECISIONS = get_args(InferencePrecision)
AGREEMENT_NEEDED = 0.999  # share of pixels whose label must equal fp32's for ``auto`` to pick bf16
BF16_AGREEMENT = {"amx": 0.9986, "avx512_bf16": 0.9942}  # recorded in BENCHMARKS.md (label share vs fp32)


@functools.cache  # asked at every encoding; the CPU does not change
def cpu_bf16_kind() -> str | None:
    """'amx', 'avx512_bf16' or None: the CPU's native bf16 matrix instructions (what oneDNN can use)."""
    if torch.cpu._is_amx_tile_supported():
        return "amx"
    return "avx512_bf16" if torch.cpu._is_avx512_bf16_supported() else None


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete path of ``precision`` on ``device``: 'fp32', 'fp32-onednn', 'bf16-matmul' or 'bf16';
    ConfigError (one line) for an unknown name or a bf16 choice this CPU cannot run natively."""
    if precision not in PRECISIONS:
        raise ConfigError(f"evaluate.seg.precision: expected one of {', '.join(PRECISIONS)}, got '{precision}'")
    kind = cpu_bf16_kind() if device.type == "cpu" else None
    if precision == "auto":
        if device.type != "cpu":
            return "fp32"
        bf16_ok = kind is not None and BF16_AGREEMENT.get(kind, 0.0) >= AGREEMENT_NEEDED
        return "bf16-matmul" if bf16_ok else "fp32-onednn"
    if precision.startswith("bf16") and device.type == "cpu" and kind is None:
        raise ConfigError(f"evaluate.seg.precision={precision}: this CPU has no native bf16 (neither AMX nor "
                          "AVX-512 BF16); use auto or fp32")
    return precision


def describe_precision(precision: str, device: torch.device) -> str:
    """What ``precision`` runs as here, for logs and results files ('auto (fp32 through oneDNN)')."""
    resolved = resolve_precision(precision, device)
    text = "fp32 through oneDNN" if resolved == "fp32-onednn" else resolved
    return f"{precision} ({text})" if precision == "auto" else text


@contextlib.contextmanager
def inference_precision(precision: str, device: torch.device):
    """Run the enclosed forward passes at ``precision``; restores the global matmul setting afterwards."""
    resolved = resolve_precision(precision, device)
    if resolved == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif resolved == "bf16-matmul":
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("medium")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)
    elif resolved == "fp32-onednn":
        with onednn_linears():
            yield
    else:
        yield
