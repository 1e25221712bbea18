"""Reading images safely and normalising their pixels: the image primitives every layer shares.

Size limit: ovseg decodes an image file (demo, ``Segmenter``, training) only when its header says it has at
most ``MAX_IMAGE_PIXELS`` pixels (a ``max_pixels`` keyword lowers or raises it per call). The check comes
before decoding, so a small file claiming a huge size costs nothing. PIL's process-wide
``Image.MAX_IMAGE_PIXELS`` is left as the user's process has it: it still guards their own Image.open
calls, and ovseg's own calls are judged by ovseg's limit alone (``open_lazily``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
# 200 M pixels (e.g. 16 000 × 12 500; 600 MB as RGB): large photos are fine, the resize bounds what the model
# sees. The one setting behind load_image (demo, inference) and ovseg.data.decode (training, ovseg prepare).
MAX_IMAGE_PIXELS = 200_000_000


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied; grey, palette, RGBA, CMYK and 16-bit converted.
    ImageError (one line, naming the file) when missing, unreadable or over ``max_pixels``."""
    try:
        with open(path, "rb") as fp, open_lazily(fp, str(path)) as img:
            refusal = pixel_limit_refusal(img.size, max_pixels)
            if refusal:
                raise ImageError(f"{path}: {refusal}")
            return to_rgb_array(ImageOps.exif_transpose(img))
    except FileNotFoundError as e:
        raise ImageError(f"{path}: no such file") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def pixel_limit_refusal(size: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why an image of ``size`` (width, height, from its header) is not decoded, or None when within limits."""
    width, height = size
    if width * height <= max_pixels:
        return None
    return (f"{width}×{height} = {width * height / 1e6:.1f} M pixels, over ovseg's limit of {max_pixels / 1e6:g} M "
            "pixels (MAX_IMAGE_PIXELS); downscale the image")


def open_lazily(fp: BinaryIO, filename: str = "") -> Image.Image:
    """The image in ``fp`` (seekable binary; the caller closes it), header read, pixels not decoded yet.

    Image.open's format detection without its decompression-bomb check: that check reads PIL's
    process-wide limit (a warning above 89 M pixels, an error above 179 M by default), which ovseg neither
    changes nor lets decide for it; callers apply ``pixel_limit_refusal`` before decoding instead."""
    Image.preinit()
    Image.init()
    fp.seek(0)
    prefix = fp.read(16)
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            claimed = accept is None or accept(prefix)
            if claimed and not isinstance(claimed, str):  # a str is PIL's "looks like it, unsupported" note
                fp.seek(0)
                return factory(fp, filename)
        except (SyntaxError, IndexError, TypeError, struct.error):  # not this format (as Image.open): next
            continue
    raise UnidentifiedImageError(f"cannot identify image file {filename or 'data'!r}")


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


def normalize_0_255(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB with values in [0, 255] -> (x − mean) / std with the ImageNet mean and std scaled by 255
    (evaluation, demo, scenes; ``data.augment.normalize_0_1`` is the same for input in [0, 1])."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std
