"""Group maps (which of the G segment tokens each pixel belongs to) drawn over the photo."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .overlay import blend, colorize
from .palette import group_palette


def render_groups(image: np.ndarray, groups: np.ndarray, n_groups: int | None = None, alpha: float = 0.5
                  ) -> np.ndarray:
    """image (H, W, 3) uint8; groups (h, w) uint8 group index at any scale (nearest-resized to H×W) ->
    (H, W, 3) uint8, each group's colour blended over the whole photo (no background in group maps)."""
    height, width = image.shape[:2]
    groups = np.asarray(groups, dtype=np.uint8)
    if groups.shape != (height, width):
        groups = np.asarray(Image.fromarray(groups).resize((width, height), Image.NEAREST))
    palette = group_palette(max(n_groups or 0, int(groups.max()) + 1))
    return blend(image, colorize(groups, palette), alpha)
