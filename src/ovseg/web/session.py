"""What the web page does, without the web framework: read an upload within limits, parse the classes,
segment, and draw the same pictures as ``ovseg demo``.

    session = WebSession(Segmenter.from_checkpoint("ovsegmentor.pth"))
    result = session.segment("photo.jpg", "cat, dog, person|man|woman", templates="simple", bg_thresh=0.95)
    result.overlay, result.legend, result.mask_path

A user mistake (not an image, too many pixels, no classes, too many prompts) raises ``OvsegError`` with a
one-line message; ``page_message`` is what the page shows of any error: no server path ever reaches it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..class_presets import resolve_class_names
from ..demo import label_classes, mask_array, render
from ..errors import OvsegError
from ..fileio import atomic_write
from ..images import to_rgb_array
from ..inference import Segmenter
from ..inference.class_names import parse_class_names
from ..label_stats import pixel_shares
from ..prompts import get_templates
from ..viz import class_palette
from ..viz.palette import paletted

MAX_CLASSES = 256
MAX_CLASSES_TEXT = 10_000  # characters
MASK_TTL_S = 3600  # mask PNGs older than this are removed from the session's folder
MASK_STEM_CHARS = 48  # of the upload's name kept in the mask PNG's name
CLASSES_KEY = "ovseg:classes"  # the mask PNG's text chunk: JSON list of the names of its label indices


@dataclass(frozen=True)
class WebLimits:
    """What the page accepts, so that no request can hold the one-job queue for long or grow the server's
    memory: the upload's size in MB (10^6 bytes) and width × height in pixels, synonyms per class, prompts
    per request (names × templates, i.e. text-encoder passes), and how many vocabularies' embeddings are kept.

    Defaults: 16 synonyms is well past any natural list (``person|man|woman|child``); 20,480 prompts is the
    largest class list the page takes (256 one-name classes) with the full 80 templates, and covers every
    preset (coco_stuff: 171 × 80 = 13,680); 32 vocabularies of at most 256 embeddings are at most 8 MB with the
    released models' 256-d projection."""

    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_synonyms: int = 16
    max_prompts: int = MAX_CLASSES * 80
    cached_vocabularies: int = 32

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
    share first; mask_path: the label PNG (0 = background, k = k-th class; paletted, names inside: see
    ``write_mask``); reused: the image encoding came from the cache (only the classes or settings changed)."""

    overlay: np.ndarray
    groups: np.ndarray
    legend: list[LegendRow]
    mask_path: Path
    seconds: float
    reused: bool


def parse_classes(text: str | None, limits: WebLimits | None = None) -> list[str]:
    """``"cat, dog, person|man|woman"`` -> ["cat", "dog", "person|man|woman"]; a preset name alone
    (``voc``, ``context``, ``coco``, ``ade``, …) -> its classes; a leading "background" is dropped.
    Each class has at most ``limits.max_synonyms`` names."""
    text = (text or "").strip()
    if len(text) > MAX_CLASSES_TEXT:
        raise OvsegError(f"the class list is {len(text)} characters long; at most {MAX_CLASSES_TEXT} are accepted")
    names = [n.strip() for n in text.split(",") if n.strip().strip("|")]
    if not names:
        raise OvsegError("type at least one class name, e.g. 'cat, dog, person|man|woman'")
    names = resolve_class_names(names)
    if len(names) > MAX_CLASSES:
        raise OvsegError(f"{len(names)} classes given; at most {MAX_CLASSES} are accepted")
    _check_synonyms(names, limits or WebLimits())
    return names


def _check_synonyms(names: list[str], limits: WebLimits) -> None:
    for synonyms in parse_class_names(names):
        if len(synonyms) > limits.max_synonyms:
            shown = "|".join(short_name(s, 24) for s in synonyms[:2])
            raise OvsegError(f"at most {limits.max_synonyms} synonyms per class ('{shown}|…' has {len(synonyms)}) "
                             "(ovseg serve --max-synonyms)")


def check_prompts(class_names: list[str], templates: str, limits: WebLimits) -> None:
    """Refuse a request whose text side (every synonym × template) exceeds ``limits.max_prompts``; an
    unknown template set is refused too (the page offers names only, a hand-made request may not)."""
    if not isinstance(templates, str):
        raise OvsegError("the prompt templates must be named: simple, subset or full")
    n_templates = len(get_templates(templates))
    n_names = sum(len(synonyms) for synonyms in parse_class_names(class_names))
    if n_names * n_templates > limits.max_prompts:
        raise OvsegError(f"this request needs {n_names * n_templates:,} prompts ({n_names} names × {n_templates} "
                         f"templates); at most {limits.max_prompts:,} are accepted: use fewer classes or synonyms, "
                         "or fewer templates (ovseg serve --max-prompts)")


def read_upload(path: str | Path, limits: WebLimits) -> np.ndarray:
    """The uploaded file -> (H, W, 3) uint8 RGB, EXIF orientation applied. The size in bytes and in pixels
    is checked before the image is decoded. Messages name the file by its base name only."""
    try:
        size = Path(path).stat().st_size
    except (OSError, ValueError) as e:
        raise OvsegError(f"the upload '{short_name(Path(path).name)}' could not be read ({_reason(e)}); "
                         "upload it again") from e
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
        raise OvsegError(f"the image could not be decoded; is the file truncated or damaged? ({_reason(e)})") from e


def _check_pixels(size: tuple[int, int], limits: WebLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise OvsegError(f"the image is {width}×{height} = {width * height / 1e6:.1f} megapixels; this page "
                         f"accepts up to {limits.max_pixels / 1e6:g} megapixels (ovseg serve --max-pixels)")


# a directory part of an absolute POSIX or Windows path: "/tmp/gradio/ab12/" of "/tmp/gradio/ab12/cat.png"
_DIRECTORY = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\\/\n'\"<>]*[\\/])+")
_LONG_WORD = re.compile(r"[^\s'\"]{61,}")
MAX_MESSAGE = 300  # characters of an error message shown on the page


def short_name(name: str, limit: int = 60) -> str:
    """``name`` cut in the middle to ``limit`` characters (its start and extension stay readable)."""
    return name if len(name) <= limit else f"{name[:limit - 17]}…{name[-16:]}"


def public_text(text: str) -> str:
    """``text`` as the browser may see it: one line, directories stripped from any path (where the server
    keeps its files is not the browser's business), long names shortened."""
    line = (text.strip().splitlines() or [""])[0]
    line = _LONG_WORD.sub(lambda m: short_name(m[0]), _DIRECTORY.sub("", line))
    return short_name(line, MAX_MESSAGE)


def page_message(error: Exception) -> str:
    """What the page shows for ``error``: a user mistake's own message, or a bug's type and first line (the
    traceback goes to the server's log); either without server paths."""
    if isinstance(error, OvsegError):
        return public_text(str(error))
    detail = public_text(str(error))
    return f"unexpected error ({type(error).__name__}{': ' + detail if detail else ''}); see the server's log"


def _reason(error: Exception) -> str:
    """An OS error's reason without its file name ("File name too long"), else its first line, path-free."""
    return getattr(error, "strerror", None) or public_text(str(error)) or type(error).__name__


def legend_rows(mask: np.ndarray, class_names: list[str]) -> list[LegendRow]:
    """Every class of ``class_names`` (not background) with its colour and pixel share in ``mask`` (indices
    into ``label_classes(class_names)``), largest share first, ties in the order given."""
    names = label_classes(class_names)
    palette = class_palette(len(names))
    shares = pixel_shares(mask, len(names))
    rows = [LegendRow(k, names[k], tuple(int(c) for c in palette[k]), float(shares[k]))
            for k in range(1, len(names))]
    return sorted(rows, key=lambda r: -r.share)


class WebSession:
    """The page's state: one ``Segmenter`` (whose cache keeps the last image's encoding and, bounded here,
    the last ``limits.cached_vocabularies`` vocabularies' embeddings), the last image's group map, and a
    private folder for the mask PNGs. Calls are serialised by a lock, so the page may run requests on
    several threads."""

    def __init__(self, segmenter: Segmenter, limits: WebLimits | None = None):
        self.segmenter = segmenter
        self.limits = limits or WebLimits()
        segmenter.text_cache.resize(self.limits.cached_vocabularies)  # the page's vocabularies come from strangers
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
        background class. ``name``: the upload's original file name (names the mask PNG). The cheap limits
        (classes, synonyms, prompts) are checked before the image is read."""
        class_names = parse_classes(classes, self.limits)
        templates = templates or self.default_templates
        check_prompts(class_names, templates, self.limits)
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
        mask_path = self._write_mask(mask, label_classes(class_names), name or Path(path).name)
        return WebResult(np.asarray(overlay), groups, legend_rows(mask, class_names), mask_path, seconds, reused)

    def _group_picture(self, key: str, rgb: np.ndarray) -> np.ndarray:
        """The final grouping block's map over the photo, cached for the last image."""
        if self._groups is None or self._groups[0] != key:
            maps = [g.numpy() for g in self.segmenter.group_layers(rgb)]
            picture = render("final_group", rgb, None, [], maps)[0][1]
            self._groups = (key, np.asarray(picture))
        return self._groups[1]

    def _write_mask(self, mask: np.ndarray, names: list[str], source_name: str) -> Path:
        """``<workdir>/<unique>/<stem>_mask.png``; folders older than ``MASK_TTL_S`` are removed."""
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        path = folder / f"{mask_stem(source_name)}_mask.png"
        write_mask(path, mask, names)
        return path

    def _prune(self) -> None:
        now = time.time()
        for folder in self.workdir.iterdir():
            if now - folder.stat().st_mtime > MASK_TTL_S:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove the mask folder."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def write_mask(path: str | Path, mask: np.ndarray, names: list[str]) -> None:
    """The mask (H, W) as a PNG that explains itself: pixel value k = class ``names[k]`` (0 = background), a
    palette with the page's colours (any viewer shows the legend's colours), and the names as JSON in a text
    chunk ``ovseg:classes`` (``json.loads(Image.open(path).text["ovseg:classes"])``). Beyond 256 names a
    palette cannot hold the indices: a 16-bit greyscale PNG, with the names."""
    info = PngImagePlugin.PngInfo()
    info.add_text(CLASSES_KEY, json.dumps(names))  # ASCII JSON: a plain tEXt chunk
    if len(names) <= 256:
        image = paletted(mask, class_palette(len(names)))
    else:
        image = Image.fromarray(mask.astype(np.uint16))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def mask_stem(source_name: str) -> str:
    """The upload's stem as a safe, short file name (the browser chooses the name: any characters, any
    length; 48 characters of at most 4 UTF-8 bytes each stay far below the file systems' 255 bytes)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(source_name).stem).strip("._")
    return stem[:MASK_STEM_CHARS] or "image"
