"""Colours: one per label index (PASCAL VOC's colour map, index 0 = background = black) and one per group."""

from __future__ import annotations

import colorsys

import numpy as np


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
