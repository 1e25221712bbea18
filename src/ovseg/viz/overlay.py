"""Label maps as colours, blended onto the photo. Works in row bands so that an 8000×6000 photo costs
a few hundred MB, not several GB of float temporaries."""

from __future__ import annotations

import numpy as np
from PIL import Image

BAND_PIXELS = 1 << 21  # pixels per band of the blends


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """labels (H, W) ints in [0, len(palette)) -> (H, W, 3) uint8 colours (PIL's palette lookup for
    uint8 labels: 3× faster than numpy indexing)."""
    if labels.dtype == np.uint8 and len(palette) <= 256:
        image = Image.fromarray(labels, mode="L").convert("P")  # L -> P keeps the values
        image.putpalette(np.asarray(palette, dtype=np.uint8).flatten().tolist())
        return np.asarray(image.convert("RGB"))
    return np.take(palette, labels, axis=0)


def _bands(height: int, width: int) -> range:
    return range(0, height, max(1, BAND_PIXELS // max(width, 1)))


def blend(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5, where: np.ndarray | None = None
          ) -> np.ndarray:
    """(1 − alpha)·image + alpha·colours, only where ``where`` (H, W) is True (everywhere if None).
    image and colours (H, W, 3) uint8 -> a new (H, W, 3) uint8 array (8-bit fixed point, rounded)."""
    weight = int(round(alpha * 256))
    out = image.copy()
    step = _bands(*image.shape[:2]).step
    for y in range(0, image.shape[0], step):
        rows = slice(y, y + step)
        mixed = image[rows].astype(np.uint16) * (256 - weight)
        mixed += colours[rows].astype(np.uint16) * weight
        mixed = ((mixed + 128) >> 8).astype(np.uint8)
        if where is None:
            out[rows] = mixed
        else:
            out[rows][where[rows]] = mixed[where[rows]]
    return out


def overlay_labels(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
                   background: int | None = 0) -> np.ndarray:
    """The photo (H, W, 3) uint8 with every label's colour blended in at ``alpha``; pixels of the
    ``background`` label are left untouched (as the original's ``input_pred``)."""
    out = image.copy()
    step = _bands(*image.shape[:2]).step
    for y in range(0, image.shape[0], step):
        rows = slice(y, y + step)
        where = None if background is None else labels[rows] != background
        out[rows] = blend(image[rows], colorize(labels[rows], palette), alpha, where)
    return out


def side_by_side(panels: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """(H, W_i, 3) uint8 pictures of one height -> one (H, sum W_i + gaps, 3) picture, left to right, with a
    white ``gap`` between them."""
    height = panels[0].shape[0]
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = [p for panel in panels for p in (spacer, panel)][1:]
    return np.concatenate(parts, axis=1)
