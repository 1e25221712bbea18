"""Colour-affinity refinement of class maps: pixel-adaptive mask refinement (PAMR, Araslanov & Roth, CVPR 2020),
the test-time step TCL (Cha et al., CVPR 2023) adds to its zero-shot masks.

GroupViT's masks follow the patch grid (a 448 window has 28×28 patches), so their edges are blocky and miss
thin parts. Refinement lets every pixel repeatedly average its neighbours' class scores, weighted by how alike
their colours are, so the scores spread inside a uniformly coloured region and stop at its edges. No
parameters are learned and no labels are used. Written for ovseg from the paper's description: neighbours on
3×3 grids at several dilations; the affinity to neighbour j is a softmax over all neighbours of
``-mean_over_channels(|I_i - I_j| / (temperature · σ_i))``, σ_i being the colour's standard deviation in the
pixel's own 3×3 neighbourhood (so the affinity is invariant to each channel's contrast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)


def _neighbour_offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _shifted(padded: torch.Tensor, pad: int, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The view of ``padded`` (…, H+2p, W+2p) whose pixel (y, x) is the original's (y+dy, x+dx), edges replicated."""
    dy, dx = offset
    return padded[..., pad + dy : pad + dy + size[0], pad + dx : pad + dx + size[1]]


def _pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(x.unsqueeze(0), (pad, pad, pad, pad), mode="replicate").squeeze(0)


def neighbour_affinity(image: torch.Tensor, dilations: tuple[int, ...] = DEFAULT_DILATIONS,
                       temperature: float = 0.3) -> torch.Tensor:
    """image (3, H, W) float -> (N, H, W) affinity of each pixel to its N neighbours (sums to 1 over N)."""
    size = image.shape[-2:]
    local = _pad(image, 1)
    window = torch.stack([image, *(_shifted(local, 1, o, size) for o in _neighbour_offsets((1,)))])
    sigma = window.std(dim=0)  # (3, H, W), the pixel's own 3x3 neighbourhood
    pad = max(dilations)
    padded = _pad(image, pad)
    scale = 1.0 / (temperature * sigma + 1e-8)
    kernel = torch.stack([-((image - _shifted(padded, pad, o, size)).abs() * scale).mean(dim=0)
                          for o in _neighbour_offsets(dilations)])
    return kernel.softmax(dim=0)


def refine_masks(image: torch.Tensor, masks: torch.Tensor, iterations: int = 10,
                 dilations: tuple[int, ...] = DEFAULT_DILATIONS, temperature: float = 0.3,
                 affinity: torch.Tensor | None = None) -> torch.Tensor:
    """image (3, H, W), masks (C, H, W) class scores -> refined (C, H, W): ``iterations`` rounds of
    affinity-weighted averaging over the neighbours (one neighbour at a time: memory C·H·W, not N·C·H·W).
    ``affinity``: ``neighbour_affinity(image, dilations, temperature)`` when already computed."""
    if image.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape[-2:])} and masks {tuple(masks.shape[-2:])} differ in size")
    if affinity is None:
        affinity = neighbour_affinity(image.float(), dilations, temperature)
    offsets, pad, size = _neighbour_offsets(dilations), max(dilations), masks.shape[-2:]
    masks = masks.float()
    for _ in range(iterations):
        padded = _pad(masks, pad)
        out = torch.zeros_like(masks)
        for j, offset in enumerate(offsets):
            out.addcmul_(_shifted(padded, pad, offset, size), affinity[j])
        masks = out
    return masks
