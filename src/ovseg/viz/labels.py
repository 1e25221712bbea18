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
        y, x = _deep_point(small == label)
        anchors[int(label)] = (int(x * step + step // 2), int(y * step + step // 2))
    return anchors


def _deep_point(region: np.ndarray) -> tuple[int, int]:
    """(y, x) well inside ``region`` (H, W) bool: of the pixels at least 80% as deep as the deepest one,
    the closest to the region's centroid (so that a band is labelled in its middle, not at one end)."""
    depth = distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(depth >= 0.8 * depth.max())
    cy, cx = np.argwhere(region).mean(axis=0)
    best = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(ys[best]), int(xs[best])


def draw_class_names(image: Image.Image, anchors: dict[int, tuple[int, int]], names: list[str],
                     font_size: int | None = None) -> Image.Image:
    """A copy of the RGB ``image`` with ``names[label]`` centred on each anchor, on a dark box, moved inside
    the image (names that cannot fit are left out). Only the boxes are composited, so a huge photo costs
    no full-size RGBA layers."""
    size = font_size or font_size_for(image.height, image.width)
    font, pad = load_font(size), max(2, size // 5)
    out = image.copy()
    for label, (x, y) in anchors.items():
        width, height = text_size(font, names[label])
        if width + 2 * pad > image.width or height + 2 * pad > image.height:
            continue  # too small a picture to write on: the legend still names the class
        left = min(max(x - width // 2, pad), image.width - width - pad)
        top = min(max(y - height // 2, pad), image.height - height - pad)
        box = (left - pad, top - pad, left + width + pad + 1, top + height + pad + 1)
        patch = out.crop(box).convert("RGBA")
        layer = Image.new("RGBA", patch.size, (0, 0, 0, 0))
        draw_boxed_text(ImageDraw.Draw(layer), (pad, pad), names[label], font, TEXT_COLOUR, BOX_COLOUR, pad)
        out.paste(Image.alpha_composite(patch, layer).convert("RGB"), box[:2])
    return out
