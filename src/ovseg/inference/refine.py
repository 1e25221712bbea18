"""Colour-affinity refinement of class maps: pixel-adaptive mask refinement (PAMR, Araslanov & Roth, CVPR 2020),
the test-time step TCL (Cha et al., CVPR 2023) adds to its zero-shot masks.

GroupViT's masks follow the patch grid (a 448 window has 28×28 patches), so their edges are blocky and miss
thin parts. Refinement lets every pixel repeatedly average its neighbours' class scores, weighted by how alike
their colours are, so the scores spread inside a uniformly coloured region and stop at its edges. No
parameters are learned and no labels are used. Written for ovseg from the published description.

Neighbours: the 8 pixels of a 3×3 grid at each dilation (1, 2, 4, 8, 12, 24 by default; edges replicated).
The affinity of pixel i to neighbour j is a softmax over all neighbours of
``-mean_over_channels(|I_i - I_j| / (temperature · σ_i + 1e-8))``; dividing by σ makes it invariant to each
channel's contrast. Two variants differ only in σ_i, a per-channel standard deviation of the colours around i:

- ``pamr`` (TCL's PAMR, temperature 0.1): over the 3×3 grids (centre included) of every dilation together,
  9 samples per dilation, so σ measures the colour spread at every distance the kernel reaches.
- ``pamr-local`` (ovseg's earlier variant, temperature 0.3): over the pixel's own 3×3 neighbourhood only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)
DEFAULT_TEMPERATURES = {"pamr": 0.1, "pamr-local": 0.3}  # TCL's 0.1; 0.3 is what pamr-local was tuned with
_EPS = 1e-8


def neighbour_offsets(dilations: tuple[int, ...], centre: bool = False) -> list[tuple[int, int]]:
    """(dy, dx) of the 3×3 grid at each dilation in order, row by row; the centre only with ``centre``."""
    return [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if centre or dy or dx]


def _shifted(padded: torch.Tensor, pad: int, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The view of ``padded`` (…, H+2p, W+2p) whose pixel (y, x) is the original's (y+dy, x+dx), edges replicated."""
    dy, dx = offset
    return padded[..., pad + dy : pad + dy + size[0], pad + dx : pad + dx + size[1]]


def _pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate padding (clamped coordinates), so one pad of max(dilations) serves every dilation."""
    return F.pad(x.unsqueeze(0), (pad, pad, pad, pad), mode="replicate").squeeze(0)


def _std(image: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """Per pixel and channel, the sample standard deviation (n − 1) of ``image`` at ``offsets`` around it; two
    passes over shifted views, so memory stays 3·H·W instead of len(offsets)·3·H·W."""
    pad, size = max(max(abs(dy), abs(dx)) for dy, dx in offsets), image.shape[-2:]
    padded = _pad(image, pad)
    mean = sum(_shifted(padded, pad, o, size) for o in offsets) / len(offsets)
    squares = sum((_shifted(padded, pad, o, size) - mean).square() for o in offsets)
    return (squares / (len(offsets) - 1)).sqrt()


def _affinity(image: torch.Tensor, sigma: torch.Tensor, dilations: tuple[int, ...], temperature: float) -> torch.Tensor:
    pad, size = max(dilations), image.shape[-2:]
    padded = _pad(image, pad)
    scale = 1.0 / (temperature * sigma + _EPS)
    kernel = torch.stack(
        [-((image - _shifted(padded, pad, o, size)).abs() * scale).mean(dim=0) for o in neighbour_offsets(dilations)]
    )
    return kernel.softmax(dim=0)


def pamr_affinity(
    image: torch.Tensor,
    dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    temperature: float = DEFAULT_TEMPERATURES["pamr"],
) -> torch.Tensor:
    """TCL's PAMR affinity: image (3, H, W) float -> (8·len(dilations), H, W), summing to 1 over neighbours.
    σ: the standard deviation over the 3×3 grids (centre included) of all dilations."""
    return _affinity(image, _std(image, neighbour_offsets(dilations, centre=True)), dilations, temperature)


def local_affinity(
    image: torch.Tensor,
    dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    temperature: float = DEFAULT_TEMPERATURES["pamr-local"],
) -> torch.Tensor:
    """ovseg's ``pamr-local`` affinity: as ``pamr_affinity`` but σ from the pixel's own 3×3 neighbourhood."""
    return _affinity(image, _std(image, neighbour_offsets((1,), centre=True)), dilations, temperature)


def refine_masks(
    image: torch.Tensor,
    masks: torch.Tensor,
    iterations: int = 10,
    dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    affinity: torch.Tensor | None = None,
) -> torch.Tensor:
    """image (3, H, W), masks (C, H, W) class scores -> refined (C, H, W): ``iterations`` rounds of
    ``mask_i ← Σ_j affinity_ij · mask_j`` over the neighbours j (one at a time: memory C·H·W, not N·C·H·W).
    ``affinity``: from ``pamr_affinity`` / ``local_affinity`` with the same ``dilations`` (default: TCL's)."""
    if image.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape[-2:])} and masks {tuple(masks.shape[-2:])} differ in size")
    if affinity is None:
        affinity = pamr_affinity(image.float(), dilations)
    offsets, pad, size = neighbour_offsets(dilations), max(dilations), masks.shape[-2:]
    if affinity.shape[0] != len(offsets):
        raise ValueError(f"affinity has {affinity.shape[0]} neighbours, dilations {dilations} give {len(offsets)}")
    masks = masks.float()
    for _ in range(iterations):
        padded = _pad(masks, pad)
        out = torch.zeros_like(masks)
        for j, offset in enumerate(offsets):
            out.addcmul_(_shifted(padded, pad, offset, size), affinity[j])
        masks = out
    return masks


@dataclass(frozen=True)
class RefineSettings:
    """One refinement, resolved from ``evaluate.seg`` (``refine``, ``refine_iterations``, ``refine_temperature``
    with None meaning the variant's own, ``refine_dilations``); hashable, so it keys caches."""

    variant: str = "pamr"
    iterations: int = 10
    temperature: float = DEFAULT_TEMPERATURES["pamr"]
    dilations: tuple[int, ...] = DEFAULT_DILATIONS

    @classmethod
    def from_config(cls, seg) -> RefineSettings:
        """``seg``: an ``evaluate.seg`` section with ``refine`` other than none. Bad values raise ConfigError."""
        variant = str(seg.refine)
        if variant not in DEFAULT_TEMPERATURES:
            known = ", ".join(DEFAULT_TEMPERATURES)
            raise ConfigError(f"evaluate.seg.refine: '{variant}' is not a refinement ({known})")
        temperature = seg.get("refine_temperature")
        temperature = DEFAULT_TEMPERATURES[variant] if temperature is None else float(temperature)
        dilations = tuple(int(d) for d in seg.get("refine_dilations", DEFAULT_DILATIONS))
        if not temperature > 0:
            raise ConfigError(f"evaluate.seg.refine_temperature: expected a positive number, got {temperature}")
        if not dilations or min(dilations) < 1:
            raise ConfigError(f"evaluate.seg.refine_dilations: expected positive integers, got {list(dilations)}")
        if int(seg.refine_iterations) < 0:
            raise ConfigError(f"evaluate.seg.refine_iterations: expected 0 or more, got {seg.refine_iterations}")
        return cls(variant, int(seg.refine_iterations), temperature, dilations)

    @property
    def affinity_key(self) -> tuple[str, float, tuple[int, ...]]:
        """What the affinity depends on (not the iterations)."""
        return self.variant, self.temperature, self.dilations

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """image (3, H, W) -> (8·len(dilations), H, W) float affinities of this variant."""
        make = pamr_affinity if self.variant == "pamr" else local_affinity
        return make(image.float(), self.dilations, self.temperature)

    def refine(self, image: torch.Tensor, masks: torch.Tensor, affinity: torch.Tensor | None = None) -> torch.Tensor:
        """masks (C, H, W) -> refined (C, H, W) float; ``affinity``: ``self.affinity(image)`` when cached."""
        affinity = self.affinity(image) if affinity is None else affinity
        return refine_masks(image, masks, self.iterations, self.dilations, affinity)
