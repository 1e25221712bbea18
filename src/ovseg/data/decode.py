"""Image decoding for training: only the region a crop needs, at no more than the resolution it needs.

A JPEG is decoded with PIL's ``draft`` mode (DCT scaling by 1/2, 1/4 or 1/8) to the smallest size that
still gives the crop at least the output resolution, which makes decoding of large photos several times
faster. The crop is then resized with PIL's antialiased bilinear filter, as torchvision's PIL path does.
An image whose header claims more than ``max_pixels`` (default: ovseg's one MAX_IMAGE_PIXELS setting, see
``ovseg.inference.preprocess``) is skipped before any decoding.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable

import numpy as np
from PIL import Image

from ..images import MAX_IMAGE_PIXELS, open_lazily, pixel_limit_refusal
from .samples import SkippedSample

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels of the full image
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def _why(e: Exception) -> str:
    return re.sub(r"<_io\.BytesIO object at \w+>", "data", str(e).splitlines()[0] if str(e) else type(e).__name__)


def open_image(data: bytes, where: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The lazily decoded image; SkippedSample('corrupt image') when the header is not an image or
    claims more than ``max_pixels`` pixels."""
    try:
        img = open_lazily(io.BytesIO(data))
    except _DECODE_ERRORS as e:
        raise SkippedSample("corrupt image", f"{where} ({_why(e)})") from e
    refusal = pixel_limit_refusal(img.size, max_pixels)
    if refusal:
        raise SkippedSample("corrupt image", f"{where} ({refusal})")
    return img


def decode_region(
    data: bytes, region: Callable[[int, int], Box], size: int, where: str, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """(size, size, 3) uint8 RGB of the box ``region(width, height)`` of the encoded image."""
    img = open_image(data, where, max_pixels)
    try:
        width, height = img.size
        box = region(width, height)
        box = _draft(img, box, size)
        rgb = _to_rgb(img)
        return np.array(rgb.resize((size, size), Image.BILINEAR, box=box))  # a writable copy
    except _DECODE_ERRORS as e:
        raise SkippedSample("corrupt image", f"{where} ({_why(e)})") from e


def _draft(img: Image.Image, box: Box, size: int) -> Box:
    """Let a JPEG decode at the smallest DCT scale that keeps the crop ≥ ``size``; the box rescaled."""
    if img.format != "JPEG":
        return box
    width, height = img.size
    scale = min(1.0, max(size / max(box[2] - box[0], 1e-6), size / max(box[3] - box[1], 1e-6)))
    img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    sx, sy = img.size[0] / width, img.size[1] / height
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB (the image itself when it is: no copy); transparent pixels composited on white (as the
    evaluation loader does)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def verify_image(data: bytes, where: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """The file extension for the image's format, after a cheap (drafted) full decode; SkippedSample if
    the data is not a readable image. Used by ``ovseg prepare`` so shards hold only decodable images."""
    img = open_image(data, where, max_pixels)
    try:
        img.draft("RGB", (64, 64))
        img.load()
    except _DECODE_ERRORS as e:
        raise SkippedSample("corrupt image", f"{where} ({_why(e)})") from e
    return FORMAT_EXT.get(img.format or "", (img.format or "img").lower())
