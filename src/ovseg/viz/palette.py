"""Colours: one per label index (PASCAL VOC's colour map, index 0 = background = black) and one per group;
paletted label images (the pixel values stay the indices, viewers show the colours)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

# Cityscapes' official colours of its 19 evaluated classes (trainIds 0..18), as its label renderings use
CITYSCAPES_COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def _voc_colour(index: int) -> tuple[int, int, int]:
    """PASCAL VOC's bit-interleaved colour of ``index``; distinct for every index below 2**24."""
    r = g = b = 0
    for shift in range(8):
        r |= ((index >> 0) & 1) << (7 - shift)
        g |= ((index >> 1) & 1) << (7 - shift)
        b |= ((index >> 2) & 1) << (7 - shift)
        index >>= 3
    return r, g, b


def class_palette(n: int) -> np.ndarray:
    """(n, 3) uint8: colour of label index i. Entries 0..20 are exactly the VOC dataset palette, so with the
    ``voc`` vocabulary each class has its familiar colour; every index has its own colour (the original
    left the last custom class uncoloured). Index 0 (background) is black and is never blended."""
    return np.array([_voc_colour(i) for i in range(n)], dtype=np.uint8).reshape(n, 3)


def group_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 bright, well-separated colours for n groups (golden-ratio hue steps)."""
    colours = []
    for i in range(n):
        hue = (0.61803398875 * i) % 1.0
        sat, val = (0.75, 0.95) if i % 2 == 0 else (0.55, 0.8)
        colours.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val)])
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


def dataset_palette(dataset: str) -> np.ndarray:
    """(256, 3) uint8 colours of a benchmark's label indices: Cityscapes' own for ``"cityscapes"``, else PASCAL
    VOC's colour map (the one VOC's label PNGs carry; index 255, "void", is (224, 224, 192) as there)."""
    palette = class_palette(256)
    if dataset == "cityscapes":
        palette[: len(CITYSCAPES_COLOURS)] = CITYSCAPES_COLOURS
    return palette


def paletted(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """labels (H, W) ints in [0, 256) -> a "P"-mode image with ``palette`` (k ≤ 256, 3): saved as PNG it reads back
    as the same indices, and any viewer shows the colours. Raises ValueError for labels outside [0, 256)."""
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"a paletted image holds indices 0..255, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.putpalette(np.asarray(palette, dtype=np.uint8)[:256].flatten().tolist())  # L -> P, values kept
    return image
