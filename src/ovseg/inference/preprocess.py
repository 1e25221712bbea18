"""Image loading and the evaluation resize of the original pipeline (mmseg 0.18 / mmcv).

``Resize(img_scale=(2048, 448), keep_ratio=True)``: scale = min(2048 / long side, 448 / short side), new
size int(x·scale + 0.5), bilinear without antialiasing (cv2 INTER_LINEAR; here torch's bilinear, equal up
to cv2's fixed-point rounding, ±1 grey level), then (x − mean) / std in RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import OvsegError

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
Image.MAX_IMAGE_PIXELS = 200_000_000  # large photos are fine; the resize bounds what we process


def load_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied; grey, palette, RGBA, CMYK and 16-bit converted."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return to_rgb_array(img)
    except FileNotFoundError as e:
        raise OvsegError(f"{path}: no such file") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise OvsegError(f"{path}: not a readable image ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8 RGB (alpha composited on white, 16-bit scaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


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


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 255] -> (x − mean) / std."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def prepare_image(image: np.ndarray, short_side: int = 448, max_long_side: int = 2048,
                  min_side: int = 16) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) normalised tensor at the evaluation scale."""
    size = keep_ratio_size(image.shape[0], image.shape[1], short_side, max_long_side, min_side)
    return normalize(resize_bilinear_uint8(image, size)).unsqueeze(0)
