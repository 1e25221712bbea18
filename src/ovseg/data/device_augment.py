"""The training augmentation after the crop, batched on the training device (``data.augment_device``).

The loader workers decode and crop only (``TrainTransform(deferred=True)``: uint8 (S, S, 3), channels last
as decoded, so that neither the workers nor the collator transpose them on the CPU); the trainer then
applies ``DeviceAugment`` to each batch on its device: the transpose, flip, RandAugment (the same policy
and op functions as the per-sample path, each op run once per batch on the samples that drew it), ImageNet
normalisation and RandomErasing (stage 1); flip and normalisation (stage 2); normalisation (``none``).

Randomness comes from generators reseeded at every optimizer step from (seed, rank, step): a seeded run
draws the same augmentation, and a resumed one continues as the uninterrupted run would. Per-sample
decisions (flip, ops, levels, signs, erasing boxes) are drawn on the CPU, so they do not depend on the
device; only the erasing noise is drawn on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from .augment import RandAugment, normalize_0_1

ERASE_SCALE, ERASE_RATIO = (0.02, 1 / 3), (0.3, 3.3)  # timm's RandomErasing, as augment.RandomErasing


def erase_boxes(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes (left, top, width, height) distributed as kornia's RectangleEraseGenerator draws them
    for ``augment.RandomErasing``: area U(scale)·H·W, aspect (h / w) from U(r0, 1) or U(1, r1) with equal
    chance, position uniform over the places where the box fits."""
    u = torch.rand(6, n, generator=generator, dtype=torch.float32)
    area = (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * u[0]) * (height * width)
    low = ERASE_RATIO[0] + (1 - ERASE_RATIO[0]) * u[1]
    high = 1 + (ERASE_RATIO[1] - 1) * u[2]
    aspect = torch.where(u[3].round().bool(), low, high)
    h = torch.round((area * aspect).sqrt()).clamp(1, height)
    w = torch.round((area / aspect).sqrt()).clamp(1, width)
    left = (u[4] * (width - w + 1)).floor()
    top = (u[5] * (height - h + 1)).floor()
    return torch.stack([left, top, w, h], 1).long()


class DeviceAugment:
    """uint8 (B, S, S, 3) crops -> the augmented, normalised float (B, 3, S, S) batch (see the module
    docstring)."""

    def __init__(
        self, mode: str, stage: int, device: torch.device, seed: int = 0, rank: int = 0, erase_prob: float = 0.25
    ):
        paper = mode == "paper"
        self.device, self.seed, self.rank = torch.device(device), seed, rank
        self.flip_prob = 0.5 if paper else 0.0
        self.rand_augment = RandAugment() if paper and stage == 1 else None
        self.erase_prob = erase_prob if self.rand_augment else 0.0
        self.decisions = torch.Generator()
        self.noise = torch.Generator(self.device)
        self.step: int | None = None

    def reseed(self, step: int) -> None:
        """Start the draws of ``step`` (later calls in the same step continue them)."""
        seed = int(np.random.SeedSequence([self.seed, self.rank, step]).generate_state(1, np.uint64)[0] >> 1)
        self.decisions.manual_seed(seed)
        self.noise.manual_seed(seed)
        self.step = step

    def __call__(self, images: torch.Tensor, step: int, partner: bool = False) -> torch.Tensor:
        """The batch augmented on ``self.device``, returned on the device ``images`` came from.
        ``partner``: stage 2's cross-image partners (flip and normalisation only)."""
        if step != self.step:
            self.reseed(step)
        where = images.device
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
        n = len(x)
        if self.flip_prob:
            flip = (torch.rand(n, generator=self.decisions) < self.flip_prob).to(self.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        x = x.float().div_(255)
        if self.rand_augment is not None and not partner:
            x = self.rand_augment(x, self.decisions)
        x = normalize_0_1(x)
        if self.erase_prob and not partner:
            x = self.erase(x)
        return x.to(where, non_blocking=True)

    def erase(self, x: torch.Tensor) -> torch.Tensor:
        """RandomErasing: with probability ``erase_prob`` per sample, a box of N(0, 1) noise."""
        n, _, height, width = x.shape
        chosen = torch.rand(n, generator=self.decisions) < self.erase_prob
        boxes = erase_boxes(n, height, width, self.decisions)
        rows = torch.nonzero(chosen).flatten()
        if len(rows) == 0:
            return x
        left, top, w, h = (v.view(-1, 1).to(self.device) for v in boxes[rows].unbind(1))
        cols = torch.arange(width, device=self.device)
        lines = torch.arange(height, device=self.device)
        inside_x = (cols >= left) & (cols < left + w)  # (k, W)
        inside_y = (lines >= top) & (lines < top + h)  # (k, H)
        mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (k, 1, H, W)
        rows = rows.to(self.device)
        noise = torch.randn((len(rows), *x.shape[1:]), generator=self.noise, device=self.device, dtype=x.dtype)
        x = x.clone()
        x[rows] = torch.where(mask, noise, x[rows])
        return x
