"""iBOT (Zhou et al., 2022): DINO plus masked image modelling with an online tokenizer. Some of the student's
global views have blocks of patches masked; for each masked patch the student predicts the teacher's
distribution for that patch of the unmasked view (a per-patch DINO loss with its own centre), through the
same projection head.

Why for the quickstart: its test-time segments name each patch from the patch's own stem features, so what
pretraining should give is patch-level (dense) features that tell the shapes apart; DINO's image-level loss
trains them only through the mean over the image, the patch loss trains every patch.

The conv stem sees 47 px around each 8-px patch, so a mask applied to the stem's output alone would leave a
masked patch's pixels in its neighbours' features; the masked patches' pixels are therefore also set to the
mean colour (0 after normalisation) before the stem.
"""

from __future__ import annotations

import random

import torch
from omegaconf import DictConfig

from .dino import Dino, cross_entropy, sharpened_targets, update_center


def block_mask(grid: tuple[int, int], ratio: float, rng: random.Random) -> torch.Tensor:
    """(h·w,) bool: rectangles of 1–4 patches a side (aspect free) added until ``ratio`` of the grid is covered."""
    h, w = grid
    mask = torch.zeros(h, w, dtype=torch.bool)
    target = round(ratio * h * w)
    while int(mask.sum()) < target:
        bh, bw = rng.randint(1, min(4, h)), rng.randint(1, min(4, w))
        y, x = rng.randint(0, h - bh), rng.randint(0, w - bw)
        mask[y : y + bh, x : x + bw] = True
    return mask.flatten()


def mask_pixels(images: torch.Tensor, mask: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) with the masked patches ((B, h·w) bool) set to 0, the normalised mean colour."""
    b, _, h, w = images.shape
    grid = mask.view(b, 1, h // patch, w // patch).float()
    keep = 1 - torch.nn.functional.interpolate(grid, scale_factor=patch, mode="nearest")
    return images * keep


class Ibot(Dino):
    """DINO's image loss on the (partly masked) views + ``patch_loss_weight`` × the masked-patch loss."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.patch = cfg.model.img_encoder.patch_size
        self.register_buffer("patch_center", torch.zeros(1, cfg.ssl.out_dim))

    def draw_masks(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """One (B, h·w) mask per global view; a view is masked with probability ``mask_prob`` at a ratio drawn
        from ``mask_ratio`` (the draws come from torch's generator, saved with the checkpoints)."""
        s = self.settings
        rng = random.Random(int(torch.randint(2**62, ()).item()))
        masks = []
        for view in views[:2]:
            grid = (view.shape[2] // self.patch, view.shape[3] // self.patch)
            rows = [
                block_mask(grid, rng.uniform(*s.mask_ratio), rng)
                if rng.random() < s.mask_prob
                else torch.zeros(grid[0] * grid[1], dtype=torch.bool)
                for _ in range(view.shape[0])
            ]
            masks.append(torch.stack(rows).to(view.device))
        return masks

    def patch_loss(
        self, teacher_tokens: list[torch.Tensor], student_tokens: list[torch.Tensor], masks: list[torch.Tensor]
    ) -> torch.Tensor:
        """Mean over masked images of the mean over their masked patches of −q log p (same view); the student's
        head runs on the masked patches only."""
        s = self.settings
        with torch.no_grad():
            t_logits = [self.teacher["head"](self.teacher["head"].norm(t)) for t in teacher_tokens]
        total, images = student_tokens[0].new_zeros(()), 0
        for t, tokens, mask in zip(t_logits, student_tokens, masks, strict=True):
            counts = mask.sum(1, keepdim=True).expand_as(mask)[mask]  # each masked patch's image's mask size
            p = self.student["head"](self.student["head"].norm(tokens[mask]))
            q = sharpened_targets(t[mask], self.patch_center, s.teacher_temp)
            total = total + (cross_entropy(q, p, s.student_temp) / counts).sum()
            images += int((mask.sum(1) > 0).sum())
        update_center(self.patch_center, torch.cat(t_logits), s.center_momentum)
        return total / max(images, 1)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = self.encode(self.teacher, views[:2])
        masks = self.draw_masks(views)
        masked = [mask_pixels(v, m, self.patch) for v, m in zip(views[:2], masks, strict=True)] + views[2:]
        student = self.encode(self.student, masked, masks)
        image = self.image_loss(teacher, student)
        patch = self.patch_loss(teacher, student[:2], masks)
        return {
            "total": image + self.settings.patch_loss_weight * patch,
            "image": image.detach(),
            "patch": patch.detach(),
        }
