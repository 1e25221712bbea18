"""Rasterising the category shapes (PIL, at any size) into boolean masks."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def _polygon(kind: str) -> list[tuple[float, float]]:
    """Vertices in the unit box [-1, 1]², y down, object pointing up."""
    if kind == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if kind == "triangle":
        return [(0.0, -1.0), (0.95, 0.8), (-0.95, 0.8)]
    if kind == "star":
        return [(r * math.sin(a), -r * math.cos(a)) for i in range(10)
                for a, r in [(i * math.pi / 5, 1.0 if i % 2 == 0 else 0.42)]]
    if kind == "heart":
        pts = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                          - math.cos(4 * t))) for t in np.linspace(0, 2 * math.pi, 48)]
        return [(x / 17.0, (y + 2.5) / 15.0) for x, y in pts]
    if kind == "cross":
        w = 0.32
        return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
                (-w, -w)]
    if kind == "kite":
        return [(0.0, -1.0), (0.62, -0.3), (0.0, 1.0), (-0.62, -0.3)]
    if kind == "arrow":
        return [(0.0, -1.0), (0.75, -0.15), (0.28, -0.15), (0.28, 1.0), (-0.28, 1.0), (-0.28, -0.15), (-0.75, -0.15)]
    raise ValueError(f"unknown polygon shape {kind}")


def shape_mask(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """(size, size) bool mask of one shape centred at (cx, cy) px, half-extent ``radius`` px, rotated."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if kind == "disc":
        draw.ellipse(box, fill=255)
    elif kind == "annulus":
        draw.ellipse(box, fill=255)
        inner = radius * 0.5
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    elif kind == "crescent":
        draw.ellipse(box, fill=255)
        dx, dy = 0.55 * radius * math.cos(angle), 0.55 * radius * math.sin(angle)
        inner = radius * 0.85
        draw.ellipse([cx + dx - inner, cy + dy - inner, cx + dx + inner, cy + dy + inner], fill=0)
    else:
        c, s = math.cos(angle), math.sin(angle)
        pts = [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in _polygon(kind)]
        draw.polygon(pts, fill=255)
    return np.asarray(canvas) > 127
