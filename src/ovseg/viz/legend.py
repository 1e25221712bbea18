"""A legend strip under the picture: one colour swatch and name (with its pixel share) per class shown."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .text import font_size_for, load_font, text_size

Entry = tuple[str, tuple[int, int, int], float]  # name, colour, share of the pixels in [0, 1]


def _layout(entries: list[Entry], font, width: int, unit: int) -> list[tuple[int, int, str, Entry]]:
    """(x, y, text, entry) of each legend item, wrapped into rows no wider than ``width``."""
    placed, x, y = [], unit, unit
    for entry in entries:
        text = f"{entry[0]} {entry[2]:.0%}"
        item = 2 * unit + text_size(font, text)[0]  # swatch + gap + text
        if x > unit and x + item > width - unit:
            x, y = unit, y + 2 * unit
        placed.append((x, y, text, entry))
        x += item + 2 * unit
    return placed


def add_legend(image: Image.Image, entries: list[Entry], font_size: int | None = None) -> Image.Image:
    """The RGB ``image`` with a white strip appended below listing ``entries`` (e.g. the classes present,
    largest first); the strip wraps to the image width. No entries: the image unchanged."""
    if not entries:
        return image
    size = font_size or font_size_for(image.height, image.width)
    font, unit = load_font(size), size
    placed = _layout(entries, font, image.width, unit)
    width = max(image.width, max(x + 2 * unit + text_size(font, t)[0] + unit for x, _, t, _ in placed))
    canvas = Image.new("RGB", (width, image.height + placed[-1][1] + 2 * unit), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for x, y, text, (_, colour, _) in placed:
        top = image.height + y
        draw.rectangle((x, top, x + unit, top + unit), fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x + int(1.5 * unit), top), text, font=font, fill=(0, 0, 0))
    return canvas
