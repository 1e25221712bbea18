"""Line charts drawn with PIL (no matplotlib): training curves for the quickstart report."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .palette import class_palette
from .text import load_font

Series = dict[str, tuple[list[float], list[float]]]  # name -> (x values, y values)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    step *= min((m for m in (1, 2, 5, 10) if (high - low) / (step * m) <= count), default=10)
    return [v for v in np.arange(math.ceil(low / step) * step, high + step / 2, step)]


def line_chart(series: Series, title: str, width: int = 640, height: int = 320) -> Image.Image:
    """One panel: every series as a coloured polyline, axes with ticks, a title and a legend."""
    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), load_font(12)
    left, right, top, bottom = 56, width - 28, 28, height - 32
    xs = [x for s in series.values() for x in s[0]]
    ys = [y for s in series.values() for y in s[1] if math.isfinite(y)]
    draw.text((left, 6), title, fill="black", font=font)
    if not xs or not ys:
        return image
    x0, x1, y0, y1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, min(ys), max(ys)
    y0, y1 = (y0 - 0.5, y1 + 0.5) if y1 == y0 else (y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0))

    def point(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle([left, top, right, bottom], outline="black")
    for tick in _ticks(y0, y1):
        _, py = point(x0, tick)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((4, py - 6), f"{tick:g}", fill="black", font=font)
    for tick in _ticks(x0, x1):
        px, _ = point(tick, y0)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.text((px - 10, bottom + 8), f"{tick:g}", fill="black", font=font)
    colours = class_palette(len(series) + 1)[1:]
    for k, (name, (sx, sy)) in enumerate(series.items()):
        pts = [point(x, y) for x, y in zip(sx, sy, strict=True) if math.isfinite(y)]
        colour = tuple(int(c) for c in colours[k])
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts if len(pts) < 30 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((right - 150, top + 4 + 14 * k), name, fill=colour, font=font)
    return image


def stack(panels: list[Image.Image]) -> Image.Image:
    """Panels one above the other."""
    width = max(p.width for p in panels)
    out = Image.new("RGB", (width, sum(p.height for p in panels)), "white")
    y = 0
    for panel in panels:
        out.paste(panel, (0, y))
        y += panel.height
    return out
