"""Training augmentation of spec §2.5 without torchvision or timm (kornia ops, PIL crops).

- stage 1 (the original's ``deit_aug``): RandomResizedCrop scale (0.08, 1) ratio (3/4, 4/3), horizontal
  flip, RandAugment ``rand-m9-mstd0.5-inc1``, ImageNet normalisation, RandomErasing p 0.25 (pixel mode);
- stage 2: RandomResizedCrop scale (0.4, 1), flip, normalisation;
- ``none``: resize the short side and take the centre square (deterministic; tests, quick checks).

Where it runs (``data.augment_device``): the crop always runs per sample in the DataLoader workers (images
differ in size, and done first it lets the JPEG decoder skip resolution the crop does not need). With
``cpu`` the rest (flip, RandAugment, normalisation, erasing) follows per sample there too; otherwise the
workers emit the uint8 crop (``deferred``) and ``device_augment.DeviceAugment`` applies the same ops
batched on the training device, which takes most of the loader's CPU time off the workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import get_args

import numpy as np
import torch
from kornia.augmentation.random_generator import RectangleEraseGenerator
from kornia.enhance import (
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
    equalize,
    posterize,
    sharpness,
)
from kornia.geometry.transform import rotate, shear, translate

from ..config import Augment
from ..errors import ConfigError
from .decode import Box, decode_region

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = get_args(Augment)


_MEAN, _STD = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalize_0_1(x: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) RGB with values in [0, 1] -> ImageNet-normalised, (x − mean) / std (training
    augmentation; ``images.normalize_0_255`` is the same for input in [0, 255])."""
    return (x - _MEAN.to(x)) / _STD.to(x)


# ------------------------------------------------------------------------------------------- RandAugment
def _signed(level: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """level with a random sign per sample (the symmetric ops of timm's RandAugment), drawn on the CPU
    (from ``generator``, else the global generator) so that a seed gives the same signs on every device."""
    draw = torch.rand(level.shape, generator=generator, dtype=level.dtype)
    return level * torch.where(draw < 0.5, -1.0, 1.0).to(level.device)


def _geometric(x: torch.Tensor, warp: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Warp with the uncovered area filled with the ImageNet mean pixel (timm's fill colour)."""
    mean = _MEAN.to(x)
    return warp(x - mean) + mean


def _factor(x: torch.Tensor, level: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Enhancement factor 1 ± 0.9·level (timm's "increasing" colour/contrast/brightness/sharpness)."""
    return (1.0 + 0.9 * _signed(level, g)).to(x.dtype)


def _shift(level: torch.Tensor, pixels: int, axis: int, g: torch.Generator | None) -> torch.Tensor:
    """(B, 2) offsets of ±level·pixels along ``axis`` (0: x, 1: y)."""
    offsets = torch.zeros(len(level), 2, dtype=level.dtype, device=level.device)
    offsets[:, axis] = _signed(level, g) * pixels
    return offsets


def _auto_contrast(x: torch.Tensor, level: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    lo, hi = x.amin((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


# op name -> fn(x (B, 3, H, W) in [0, 1], level (B,) in [0, 1], generator of the signs or None); magnitudes
# of timm's "inc1" set at level 1: rotate 30°, shear 0.3, translate 0.45 of the size, colour factors 1 ± 0.9,
# posterize 4 -> 0 bits, solarize threshold 1 -> 0, solarize-add 110/255
Op = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]
RAND_OPS: dict[str, Op] = {
    "auto_contrast": _auto_contrast,
    "equalize": lambda x, lv, g=None: equalize(x),
    "invert": lambda x, lv, g=None: 1.0 - x,
    "rotate": lambda x, lv, g=None: _geometric(x, lambda y: rotate(y, 30.0 * _signed(lv, g).to(x.dtype))),
    "posterize": lambda x, lv, g=None: posterize(x, (4 - (4 * lv).floor()).to(torch.int64)),  # 4 bits to 0
    "solarize": lambda x, lv, g=None: torch.where(x >= (1.0 - lv).view(-1, 1, 1, 1), 1.0 - x, x),
    "solarize_add": lambda x, lv, g=None: torch.where(x < 0.5, (x + (110 / 255) * lv.view(-1, 1, 1, 1)).clamp(0, 1), x),
    "color": lambda x, lv, g=None: adjust_saturation_with_gray_subtraction(x, _factor(x, lv, g)),
    "contrast": lambda x, lv, g=None: adjust_contrast_with_mean_subtraction(x, _factor(x, lv, g)),
    "brightness": lambda x, lv, g=None: (x * _factor(x, lv, g).view(-1, 1, 1, 1)).clamp(0, 1),
    "sharpness": lambda x, lv, g=None: sharpness(x, _factor(x, lv, g)),
    "shear_x": lambda x, lv, g=None: _geometric(x, lambda y: shear(y, _shift(0.3 * lv, 1, 0, g).to(x.dtype))),
    "shear_y": lambda x, lv, g=None: _geometric(x, lambda y: shear(y, _shift(0.3 * lv, 1, 1, g).to(x.dtype))),
    "translate_x": lambda x, lv, g=None: _geometric(
        x, lambda y: translate(y, _shift(0.45 * lv, x.shape[-1], 0, g).to(x.dtype))
    ),
    "translate_y": lambda x, lv, g=None: _geometric(
        x, lambda y: translate(y, _shift(0.45 * lv, x.shape[-2], 1, g).to(x.dtype))
    ),
}


class RandAugment:
    """timm's ``rand-m9-mstd0.5-inc1`` on a batch (B, 3, H, W) in [0, 1]: ``num_ops`` rounds; in each,
    every sample draws one of the 15 ops (with replacement), applies it with probability ``prob`` at level
    clip(N(magnitude, std), 0, 10) / 10. Each op runs once per round on the samples that drew it.

    The draws are made on the CPU, from ``generator`` when given (the batched path: the same seed gives the
    same draws on every device, and grouping by op needs no device sync), else from the global generator.
    ``ops`` restricts the policy to some of ``RAND_OPS`` (tests)."""

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 9.0,
        std: float = 0.5,
        prob: float = 0.5,
        ops: Sequence[str] = tuple(RAND_OPS),
    ):
        self.num_ops, self.magnitude, self.std, self.prob = num_ops, magnitude, std, prob
        self.names = list(ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x, n, g = x.clone(), len(x), generator
        for _ in range(self.num_ops):
            op = torch.randint(len(self.names), (n,), generator=g)
            applied = torch.rand(n, generator=g) < self.prob
            level = ((self.magnitude + self.std * torch.randn(n, generator=g)).clamp(0, 10) / 10).to(x)
            for k in op[applied].unique().tolist():
                rows = torch.nonzero(applied & (op == k)).flatten().to(x.device)
                x[rows] = RAND_OPS[self.names[k]](x[rows], level[rows], g).clamp(0, 1)
        return x


class RandomErasing:
    """timm's RandomErasing in pixel mode (one region) on normalised (B, 3, H, W): with probability ``p`` per
    sample, a box drawn by kornia's rectangle-erase generator (area ``scale`` of the image, aspect ``ratio``)
    is filled with per-pixel N(0, 1) noise."""

    def __init__(
        self, p: float = 0.25, scale: tuple[float, float] = (0.02, 1 / 3), ratio: tuple[float, float] = (0.3, 3.3)
    ):
        self.p = p
        self.generator = RectangleEraseGenerator(scale=scale, ratio=ratio)
        self.generator.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.nonzero(torch.rand(len(x)) < self.p).flatten().tolist()
        if not rows:
            return x
        x = x.clone()
        boxes = self.generator(torch.Size([len(rows), *x.shape[1:]]))
        for k, i in enumerate(rows):
            left, top = int(boxes["xs"][k]), int(boxes["ys"][k])
            width, height = int(boxes["widths"][k]), int(boxes["heights"][k])
            x[i, :, top : top + height, left : left + width] = torch.randn(x.shape[1], height, width, dtype=x.dtype)
        return x


# ------------------------------------------------------------------------------------------------ crops
class RandomCrop:
    """Box sampler of torchvision's RandomResizedCrop: up to ``TRIES`` boxes of area U(scale)·W·H and
    log-uniform aspect (width / height) in ``ratio``; the first that fits is placed at a uniform integer
    offset; if none fits, the centre crop of the whole image clamped to the ``ratio`` range.

    Plain Python on one draw of 22 uniforms from torch's global generator, which DataLoader workers seed
    (the trainer seeds it for ``num_workers=0``): kornia's batched generator cost ~0.5 ms per box here,
    a quarter of the workers' CPU time when they only decode and crop."""

    TRIES = 10

    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.scale, self.ratio = scale, ratio
        self.log_ratio = math.log(ratio[0]), math.log(ratio[1])

    def __call__(self, width: int, height: int) -> Box:
        u = torch.rand(2 * self.TRIES + 2, dtype=torch.float64).tolist()
        (s0, s1), (r0, r1) = self.scale, self.log_ratio
        for k in range(self.TRIES):
            area = width * height * (s0 + (s1 - s0) * u[2 * k])
            aspect = math.exp(r0 + (r1 - r0) * u[2 * k + 1])
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = int(u[-2] * (width - w + 1)), int(u[-1] * (height - h + 1))
                return left, top, left + w, top + h
        return self.fallback(width, height)

    def fallback(self, width: int, height: int) -> Box:
        """The centre crop, the whole image when its aspect is within ``ratio``."""
        w, h = width, height
        if width / height < min(self.ratio):
            h = round(width / min(self.ratio))
        elif width / height > max(self.ratio):
            w = round(height * max(self.ratio))
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h


def centre_square(width: int, height: int) -> Box:
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class TrainTransform:
    """Encoded image bytes -> (3, size, size) normalised float tensor (see the module docstring); with
    ``deferred``, the uint8 (size, size, 3) crop only (``DeviceAugment`` does the rest on the batch)."""

    def __init__(self, size: int, mode: str = "paper", stage: int = 1, deferred: bool = False):
        if mode not in MODES:
            raise ConfigError(f"data.augment: expected one of {', '.join(MODES)}, got '{mode}'")
        self.size, self.mode, self.stage, self.deferred = size, mode, stage, deferred
        self.crop = RandomCrop((0.08, 1.0) if stage == 1 else (0.4, 1.0)) if mode == "paper" else None
        self.flip_prob = 0.5 if mode == "paper" else 0.0
        self.rand_augment = RandAugment() if mode == "paper" and stage == 1 else None
        self.eraser = RandomErasing(p=0.25) if self.rand_augment else None

    def __call__(self, data: bytes, where: str = "") -> torch.Tensor:
        pixels = decode_region(data, self.crop or centre_square, self.size, where)
        if self.deferred:  # channels last: stacked as is, transposed with the batch on the device
            return torch.from_numpy(pixels)
        return self.augment(pixels)

    def augment(self, pixels: np.ndarray) -> torch.Tensor:
        """The per-sample rest of the pipeline on a (size, size, 3) uint8 crop."""
        if self.flip_prob and torch.rand(()) < self.flip_prob:
            pixels = pixels[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255).unsqueeze(0)
        if self.rand_augment is not None:
            x = self.rand_augment(x)
        x = normalize_0_1(x)
        if self.eraser is not None:
            x = self.eraser(x)
        return x[0]
