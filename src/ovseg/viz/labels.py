"""Class names written on the regions they label (the ``input_pred_label`` mode)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import distance_transform_edt

from .text import draw_boxed_text, font_size_for, load_font, text_size

TEXT_COLOUR = (255, 69, 0, 255)  # orangered, as the original
BOX_COLOUR = (0, 0, 0, 140)  # semi-transparent black


def region_anchors(labels: np.ndarray, skip: tuple[int, ...] = (0,), max_side: int = 256
                   ) -> dict[int, tuple[int, int]]:
    """labels (H, W) -> {label: (x, y)} the pixel deepest inside each present label's area (the original
    used the centroid, which can fall outside a ring-shaped or split region). Computed on a strided copy
    at most ``max_side`` pixels on a side, so it costs the same for any photo size."""
    step = max(1, int(np.ceil(max(labels.shape) / max_side)))
    small = labels[::step, ::step]
    anchors = {}
    for label in np.unique(small):
        if int(label) in skip:
            continue
        depth = distance_transform_edt(np.pad(small == label, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        anchors[int(label)] = (int(x * step + step // 2), int(y * step + step // 2))
    return anchors


def draw_class_names(image: Image.Image, anchors: dict[int, tuple[int, int]], names: list[str],
                     font_size: int | None = None) -> Image.Image:
    """A copy of the RGB ``image`` with ``names[label]`` centred on each anchor, on a dark box, kept inside
    the image where it fits."""
    size = font_size or font_size_for(image.height, image.width)
    font, pad = load_font(size), max(2, size // 5)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for label, (x, y) in anchors.items():
        width, height = text_size(font, names[label])
        left = min(max(x - width // 2, pad), max(image.width - width - pad, pad))
        top = min(max(y - height // 2, pad), max(image.height - height - pad, pad))
        draw_boxed_text(draw, (left, top), names[label], font, TEXT_COLOUR, BOX_COLOUR, pad)
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
