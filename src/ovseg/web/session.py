"""What the web page does, without the web framework: read an upload within limits, parse the classes,
segment, and draw the same pictures as ``ovseg demo``.

    session = WebSession(Segmenter.from_checkpoint("ovsegmentor.pth"))
    result = session.segment("photo.jpg", "cat, dog, person|man|woman", templates="simple", bg_thresh=0.95)
    result.overlay, result.legend, result.mask_path

A user mistake (not an image, too many pixels, no classes) raises ``OvsegError`` with a one-line message
that the page shows as it is.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..demo import label_classes, mask_array, render
from ..errors import OvsegError
from ..inference import Segmenter
from ..inference.preprocess import to_rgb_array
from ..viz import class_palette
from ..vocabularies import resolve_vocabulary

MAX_CLASSES = 256
MAX_CLASSES_TEXT = 10_000  # characters
MASK_TTL_S = 3600  # mask PNGs older than this are removed from the session's folder


@dataclass(frozen=True)
class WebLimits:
    """What the page accepts: the upload's size in MB (10^6 bytes) and its width × height in pixels."""

    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


@dataclass(frozen=True)
class LegendRow:
    """One class asked for: its index in the mask PNG, display name, RGB colour and share of the pixels
    in [0, 1] (0 when it was not found)."""

    index: int
    name: str
    colour: tuple[int, int, int]
    share: float


@dataclass
class WebResult:
    """overlay: (H, W', 3) uint8 photo with the classes blended in, named, and a legend strip below;
    groups: (H, W, 3) uint8 group map of the final grouping block; legend: every class asked for, largest
    share first; mask_path: the label PNG (0 = background, k = k-th class); reused: the image encoding came
    from the cache (only the classes or settings changed)."""

    overlay: np.ndarray
    groups: np.ndarray
    legend: list[LegendRow]
    mask_path: Path
    seconds: float
    reused: bool


def parse_classes(text: str | None) -> list[str]:
    """``"cat, dog, person|man|woman"`` -> ["cat", "dog", "person|man|woman"]; a preset name alone
    (``voc``, ``context``, ``coco``, ``ade``, …) -> its classes; a leading "background" is dropped."""
    text = (text or "").strip()
    if len(text) > MAX_CLASSES_TEXT:
        raise OvsegError(f"the class list is {len(text)} characters long; at most {MAX_CLASSES_TEXT} are accepted")
    names = [n.strip() for n in text.split(",") if n.strip().strip("|")]
    if not names:
        raise OvsegError("type at least one class name, e.g. 'cat, dog, person|man|woman'")
    names = resolve_vocabulary(names)
    if len(names) > MAX_CLASSES:
        raise OvsegError(f"{len(names)} classes given; at most {MAX_CLASSES} are accepted")
    return names


def read_upload(path: str | Path, limits: WebLimits) -> np.ndarray:
    """The uploaded file -> (H, W, 3) uint8 RGB, EXIF orientation applied. The size in bytes and in pixels
    is checked before the image is decoded."""
    size = Path(path).stat().st_size
    if size > limits.max_upload_bytes:
        raise OvsegError(f"the file is {size / 1e6:.1f} MB; this page accepts up to {limits.max_upload_mb:g} MB "
                         "(ovseg serve --max-upload-mb)")
    try:
        with Image.open(path) as img:
            _check_pixels(img.size, limits)
            return to_rgb_array(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as e:
        raise OvsegError("this file is not an image (JPEG, PNG, WebP, BMP, TIFF, … are accepted)") from e
    except Image.DecompressionBombError as e:
        raise OvsegError(f"the image has too many pixels; this page accepts up to {limits.max_pixels / 1e6:g} "
                         "megapixels (ovseg serve --max-pixels)") from e
    except (OSError, SyntaxError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise OvsegError(f"the image could not be decoded; is the file truncated or damaged? ({reason})") from e


def _check_pixels(size: tuple[int, int], limits: WebLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise OvsegError(f"the image is {width}×{height} = {width * height / 1e6:.1f} megapixels; this page "
                         f"accepts up to {limits.max_pixels / 1e6:g} megapixels (ovseg serve --max-pixels)")


def legend_rows(mask: np.ndarray, class_names: list[str]) -> list[LegendRow]:
    """Every class of ``class_names`` (not background) with its colour and pixel share in ``mask`` (indices
    into ``label_classes(class_names)``), largest share first, ties in the order given."""
    names = label_classes(class_names)
    palette = class_palette(len(names))
    counts = np.bincount(mask.ravel(), minlength=len(names))
    rows = [LegendRow(k, names[k], tuple(int(c) for c in palette[k]), float(counts[k] / mask.size))
            for k in range(1, len(names))]
    return sorted(rows, key=lambda r: -r.share)


class WebSession:
    """The page's state: one ``Segmenter`` (whose cache keeps the last image's encoding and every
    vocabulary's embeddings), the last image's group map, and a private folder for the mask PNGs.
    Calls are serialised by a lock, so the page may run requests on several threads."""

    def __init__(self, segmenter: Segmenter, limits: WebLimits | None = None):
        self.segmenter = segmenter
        self.limits = limits or WebLimits()
        self.workdir = Path(tempfile.mkdtemp(prefix="ovseg-web-"))
        self._lock = threading.Lock()
        self._last_key: str | None = None
        self._groups: tuple[str, np.ndarray] | None = None

    @property
    def default_bg_thresh(self) -> float | None:
        return self.segmenter.cfg.bg_thresh

    @property
    def default_templates(self) -> str:
        return self.segmenter.cfg.template

    def segment(self, path: str | Path, classes: str, templates: str | None = None,
                bg_thresh: float | None = None, name: str | None = None) -> WebResult:
        """Segment the image file at ``path`` into the comma-separated ``classes``; ``bg_thresh`` None: no
        background class. ``name``: the upload's original file name (names the mask PNG)."""
        class_names = parse_classes(classes)
        rgb = read_upload(path, self.limits)
        with self._lock:
            start = time.perf_counter()
            key = hashlib.blake2b(rgb.tobytes(), digest_size=16).hexdigest() + str(rgb.shape)
            reused, self._last_key = key == self._last_key, key
            pred = self.segmenter.predict(rgb, class_names, bg_thresh=bg_thresh, templates=templates)
            mask = mask_array(pred, bg_thresh is not None)
            overlay = render("input_pred_label", rgb, mask, label_classes(class_names), None)[0][1]
            groups = self._group_picture(key, rgb)
            seconds = time.perf_counter() - start
        mask_path = self._write_mask(mask, name or Path(path).name)
        return WebResult(np.asarray(overlay), groups, legend_rows(mask, class_names), mask_path, seconds, reused)

    def _group_picture(self, key: str, rgb: np.ndarray) -> np.ndarray:
        """The final grouping block's map over the photo, cached for the last image."""
        if self._groups is None or self._groups[0] != key:
            maps = [g.numpy() for g in self.segmenter.group_layers(rgb)]
            picture = render("final_group", rgb, None, [], maps)[0][1]
            self._groups = (key, np.asarray(picture))
        return self._groups[1]

    def _write_mask(self, mask: np.ndarray, source_name: str) -> Path:
        """``<workdir>/<unique>/<stem>_mask.png``; folders older than ``MASK_TTL_S`` are removed."""
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        path = folder / f"{Path(source_name).stem or 'image'}_mask.png"
        Image.fromarray(mask).save(path)
        return path

    def _prune(self) -> None:
        now = time.time()
        for folder in self.workdir.iterdir():
            if now - folder.stat().st_mtime > MASK_TTL_S:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove the mask folder."""
        shutil.rmtree(self.workdir, ignore_errors=True)
