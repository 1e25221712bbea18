"""The evaluation resize of the original pipeline (mmseg 0.18 / mmcv).

``Resize(img_scale=(2048, 448), keep_ratio=True)``: scale = min(2048 / long side, 448 / short side), new
size int(x·scale + 0.5), bilinear without antialiasing (cv2 INTER_LINEAR; here torch's bilinear, equal up
to cv2's fixed-point rounding, ±1 grey level), then (x − mean) / std in RGB (``images.normalize_0_255``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..images import normalize_0_255


def keep_ratio_size(height: int, width: int, short_side: int = 448, max_long_side: int = 2048,
                    min_side: int = 16) -> tuple[int, int]:
    """mmcv ``imrescale`` size for img_scale (max_long_side, short_side); each side at least ``min_side``."""
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    return max(int(height * scale + 0.5), min_side), max(int(width * scale + 0.5), min_side)


def resize_bilinear_uint8(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) float32 holding rounded uint8 values (what cv2 would return)."""
    x = torch.tensor(image).permute(2, 0, 1).float().unsqueeze(0)  # a copy: inputs may be read-only
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    return x[0]


def prepare_image(image: np.ndarray, short_side: int = 448, max_long_side: int = 2048,
                  min_side: int = 16) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) normalised tensor at the evaluation scale."""
    size = keep_ratio_size(image.shape[0], image.shape[1], short_side, max_long_side, min_side)
    return normalize_0_255(resize_bilinear_uint8(image, size)).unsqueeze(0)
