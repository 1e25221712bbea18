"""The evaluation preprocessing of the original pipeline (mmseg 0.18 / mmcv 1.x), bit for bit.

``Resize(img_scale=(2048, 448), keep_ratio=True)`` is mmcv's ``imrescale``: scale = min(2048 / long side,
448 / short side), new size int(side·scale + 0.5), then OpenCV's ``cv2.resize`` with ``INTER_LINEAR`` on the
uint8 image. OpenCV computes that resize in fixed point and rounds to uint8, so it is called here rather
than imitated: a float bilinear resize plus rounding is off by one grey level on ~12 % of the values, and
that moves label-map pixels. ``Normalize`` (``imnormalize``, OpenCV 4) is (v − mean) / std in float64 on
float32 constants, rounded once; the float32 (v − mean) / std of ``images.normalize_0_255`` gives the same
bits (v − mean is exact in float32, and a float32 quotient rounded via float64 is rounded correctly).
"""

from __future__ import annotations

import numpy as np
import torch

from ..images import normalize_0_255


def keep_ratio_size(
    height: int, width: int, short_side: int = 448, max_long_side: int = 2048, min_side: int = 16
) -> tuple[int, int]:
    """mmcv ``imrescale`` size for img_scale (max_long_side, short_side), rounded half up; each side at
    least ``min_side`` (one patch: ovseg's guard for slivers, beyond the original)."""
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    return max(int(height * scale + 0.5), min_side), max(int(width * scale + 0.5), min_side)


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8, ``size`` = (h, w): OpenCV's INTER_LINEAR, the original's resize."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    import cv2  # imported on first use: ~0.4 s that ``import ovseg`` need not pay

    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def prepare_image(
    image: np.ndarray, short_side: int = 448, max_long_side: int = 2048, min_side: int = 16
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 normalised tensor at the evaluation scale."""
    size = keep_ratio_size(image.shape[0], image.shape[1], short_side, max_long_side, min_side)
    resized = torch.tensor(resize_uint8(image, size))  # a copy: the input may be read-only
    return normalize_0_255(resized.permute(2, 0, 1).float().contiguous()).unsqueeze(0)
