"""The training step's precision (``train.amp``): bf16 autocast, the image stem alone in bf16, or fp32.

Inference has its own policy (``inference/precision.py``); validation and saved models are always fp32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import get_args

import torch

from ..config import TrainingPrecision
from ..errors import ConfigError
from ..model import OVSegmentor
from ..model.vision import stem_precision

log = logging.getLogger(__name__)
AMP_MODES = get_args(TrainingPrecision)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The training step's autocast dtype: bf16 when asked for (or on CUDA with ``auto``), else None (fp32;
    ``bf16-stem`` runs only the image stem in bf16, see ``stem_dtype``)."""
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp: expected {', '.join(AMP_MODES)}, got '{amp}'")
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def stem_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 for the image stem alone with ``bf16-stem`` where bf16 is native (CUDA, or a CPU with AMX):
    the quickstart's conv stem then runs ~2x faster on CPU, while its small transformer would lose more
    to casts than it gains (BENCHMARKS.md). A CPU without AMX would emulate bf16, so it stays fp32 there."""
    if amp != "bf16-stem":
        return None
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_amx()):
        return torch.bfloat16
    log.info("train.amp=bf16-stem: this CPU has no AMX, so the stem stays fp32")
    return None


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 natively (Intel AMX tiles)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the guard
    return bool(probe and probe())


@dataclass(frozen=True)
class StepPrecision:
    """The dtypes of one training step: ``autocast`` for the whole step, ``stem`` for the image stems
    (None: fp32)."""

    device_type: str
    autocast: torch.dtype | None
    stem: torch.dtype | None

    @classmethod
    def for_training(cls, amp: str, device: torch.device) -> StepPrecision:
        """``train.amp`` on ``device``; an unknown mode raises ConfigError."""
        return cls(device.type, autocast_dtype(amp, device), stem_dtype(amp, device))

    @contextlib.contextmanager
    def applied(self, model: OVSegmentor) -> Iterator[None]:
        """Run the enclosed forward passes at this precision; the stems return to fp32 afterwards."""
        enabled = self.autocast is not None
        with torch.autocast(self.device_type, dtype=self.autocast or torch.float32, enabled=enabled), \
                stem_precision(model.image_encoders(), self.stem):
            yield
