"""SimMIM (Xie et al., 2022): masked image modelling with no teacher. About half of each image's patches are
masked; the encoder's tokens of the masked patches go through a linear head (SimMIM's one-layer decoder, after
a LayerNorm) to the patch's pixels, and an L1 loss over the masked pixels alone trains it.

Why for the quickstart: its test-time segments name each patch from the patch's own stem features, and the
scene categories differ by shape, not colour. Painting a hidden part of an object back from what surrounds
it is a dense task that every patch takes part in, and it needs the shape around the patch.

The mask is random (a random set of units of ``mask_unit_mim`` × ``mask_unit_mim`` patches, an exact share of
them per image): SimMIM found random masking as good as block-wise masking, and better when the masked
unit is larger than the token's patch. A unit larger than one patch means a masked pixel lies further from
the nearest visible one, so the head cannot just interpolate between neighbours. As in iBOT
(``ibot.mask_pixels``), masked pixels are blanked before the stem, whose 47-px field would otherwise see them
in their neighbours' tokens, and the stem's features there are replaced by the learned mask token.

One view per image: a random resized crop with a flip, no colour change (the target is the pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ...data.augment import normalize_0_1
from ...errors import ConfigError
from .augment import resized_crops
from .backbone import SslBackbone
from .ibot import mask_pixels


class OneCrop:
    """uint8 (B, 3, H, W) -> [(B, 3, size, size)]: one normalised random resized crop per image, flipped half
    the time (the loop hands the method a list of views)."""

    def __init__(self, size: int, scale: tuple[float, float]):
        self.size, self.scale = size, scale

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [normalize_0_1(resized_crops(images.float() / 255, self.size, self.scale))]


def random_unit_mask(batch: int, grid: tuple[int, int], unit: int, ratio: float) -> torch.Tensor:
    """(B, h·w) bool: per image exactly round(ratio · units) of the unit × unit squares of patches, chosen
    at random (from torch's generator, which training checkpoints save)."""
    h, w = grid
    units = (h // unit) * (w // unit)
    chosen = torch.rand(batch, units).argsort(dim=1) < round(ratio * units)  # a random subset of that size
    squares = chosen.view(batch, 1, h // unit, w // unit).float()
    return F.interpolate(squares, scale_factor=unit, mode="nearest").view(batch, h * w).bool()


def check_mask(size: int, patch: int, unit: int, ratio: float) -> None:
    """A ConfigError unless a ``size``-px view is a whole number of mask units and ``ratio`` masks some of
    them but not all (the loss needs masked pixels, the encoder visible ones)."""
    side = size / (patch * unit) if unit > 0 else 0
    if side != int(side) or side < 1:
        raise ConfigError(
            f"ssl.mask_unit_mim={unit}: a {size}-px view (ssl.global_size) is not a whole number of "
            f"{unit}×{unit}-patch units of {patch} px"
        )
    units = int(side) ** 2
    if not 1 <= round(ratio * units) < units:
        raise ConfigError(
            f"ssl.mask_ratio_mim={ratio}: masks {round(ratio * units)} of {units} units (need 1–{units - 1})"
        )


def patches_of(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h·w, 3·patch·patch): each patch's pixels, in the order of the encoder's tokens."""
    return F.unfold(images, kernel_size=patch, stride=patch).transpose(1, 2)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over the pixels of the masked patches ((B, N, D) values, (B, N) bool mask)."""
    return (pred[mask] - target[mask]).abs().mean()


class Simmim(nn.Module):
    """The encoder and its pixel head (``student``; there is no teacher); ``forward(views)`` -> loss parts."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        ie, s = cfg.model.img_encoder, cfg.ssl
        self.patch, self.unit, self.ratio = ie.patch_size, s.mask_unit_mim, s.mask_ratio_mim
        check_mask(s.global_size, self.patch, self.unit, self.ratio)
        head = nn.Sequential(nn.LayerNorm(ie.embed_dim), nn.Linear(ie.embed_dim, 3 * self.patch**2))
        self.student = nn.ModuleDict({"backbone": SslBackbone(ie), "head": head})
        self.views = OneCrop(s.global_size, tuple(s.global_scale))

    def draw_masks(self, view: torch.Tensor) -> torch.Tensor:
        grid = (view.shape[2] // self.patch, view.shape[3] // self.patch)
        return random_unit_mask(view.shape[0], grid, self.unit, self.ratio).to(view.device)

    def forward(self, views: list[torch.Tensor], mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        (view,) = views
        mask = self.draw_masks(view) if mask is None else mask
        tokens = self.student["backbone"](mask_pixels(view, mask, self.patch), mask)
        loss = masked_l1(self.student["head"](tokens), patches_of(view, self.patch), mask)
        return {"total": loss, "pixel": loss.detach()}

    def update_teacher(self, momentum: float) -> None:
        """No teacher: nothing to move (the loop calls this for every method)."""

    def exported(self) -> dict[str, torch.Tensor]:
        """The trained encoder's tensors, under the image encoder's names."""
        return self.student["backbone"].encoder_state()
