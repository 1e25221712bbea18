"""Fonts and boxed text with PIL's built-in scalable font (no font files, no matplotlib)."""

from __future__ import annotations

from functools import lru_cache

from PIL import ImageDraw, ImageFont

Colour = tuple[int, ...]


@lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font at ``size`` pixels (a fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def font_size_for(height: int, width: int) -> int:
    """Text height that reads well on an image of this size: 1/30 of the short side, 12 to 160 px."""
    return int(min(max(min(height, width) / 30, 12), 160))


def text_size(font: ImageFont.ImageFont, text: str) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn from the origin."""
    left, top, right, bottom = font.getbbox(text)
    return int(right), int(bottom)


def draw_boxed_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: ImageFont.ImageFont,
                    fill: Colour, box: Colour, pad: int) -> None:
    """``text`` with its top-left corner at ``xy`` on a filled box ``pad`` pixels larger on each side."""
    width, height = text_size(font, text)
    x, y = xy
    draw.rectangle((x - pad, y - pad, x + width + pad, y + height + pad), fill=box)
    draw.text((x, y), text, font=font, fill=fill)
