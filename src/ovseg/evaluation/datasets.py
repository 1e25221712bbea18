"""Benchmark readers: find (image, label) pairs in the standard layouts, load and check them.

Images are read as stored (no EXIF rotation: annotations index the stored pixels) and brought to the
harness scale in the loader workers; labels are read as index maps (palette PNGs keep their indices).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import OvsegError
from ..images import to_rgb_array
from ..inference.preprocess import prepare_image
from .registry import EvalSet

log = logging.getLogger(__name__)
IGNORE_INDEX = 255


@dataclass(frozen=True)
class SamplePaths:
    name: str
    image: Path
    label: Path


@dataclass
class Sample:
    """One evaluation sample. image: (1, 3, h, w) normalised at the processing scale; size: original (H, W);
    label: (H, W) int64 class indices (255 ignored; values ≥ num_classes are out of range);
    invalid: pixels out of range and their values as stored in the file."""

    name: str
    image: torch.Tensor
    size: tuple[int, int]
    label: torch.Tensor
    invalid: int = 0
    invalid_values: tuple[int, ...] = ()
    label_path: str = ""

    def pin_memory(self) -> Sample:
        """Page-locked tensors (the DataLoader calls this with ``pin_memory=True``) for async copies."""
        self.image, self.label = self.image.pin_memory(), self.label.pin_memory()
        return self


def default_data_root(eval_set: EvalSet) -> Path:
    """``$OVSEG_DATA/<default>`` if OVSEG_DATA is set, else ``./data/<default>`` (mmseg's convention)."""
    return Path(os.environ.get("OVSEG_DATA", "data")) / eval_set.default_root


def resolve_root(eval_set: EvalSet, root: str | Path | None) -> Path:
    """The folder holding the layout: ``root`` itself or one of the usual sub-folders below it
    (``VOCdevkit/VOC2012`` …); raises naming the first missing sub-folder."""
    root = Path(root) if root else default_data_root(eval_set)
    if not root.is_dir():
        raise OvsegError(f"{eval_set.name}: data root {root} does not exist; set --data-root to the folder "
                         f"holding {eval_set.layout()}")
    for cand in [root] + [root / g for g in eval_set.root_guesses]:
        if not _missing_parts(eval_set, cand):
            if cand != root:
                log.info("%s: using %s", eval_set.name, cand)
            return cand
    missing = _missing_parts(eval_set, root)
    raise OvsegError(f"{eval_set.name}: {root} has no '{missing[0]}' (expected {eval_set.title} layout: "
                     f"{eval_set.layout()})")


def _missing_parts(eval_set: EvalSet, root: Path) -> list[str]:
    missing = [] if (root / eval_set.img_dir).is_dir() else [eval_set.img_dir + "/"]
    if not any((root / d).is_dir() for d in eval_set.ann_dirs):
        missing.append(eval_set.ann_dirs[0] + "/")
    if eval_set.split and not (root / eval_set.split).is_file():
        missing.append(eval_set.split)
    return missing


def annotation_dir(eval_set: EvalSet, root: Path) -> Path:
    """The first candidate annotation folder that exists (COCO-Object: ``val2017_cocoobject`` first)."""
    return next(root / d for d in eval_set.ann_dirs if (root / d).is_dir())


def find_samples(eval_set: EvalSet, root: str | Path | None) -> tuple[Path, list[SamplePaths]]:
    """(resolved root, samples in mmseg's order: the split file's, else sorted paths)."""
    root = resolve_root(eval_set, root)
    img_dir, ann_dir = root / eval_set.img_dir, annotation_dir(eval_set, root)
    if eval_set.split:
        stems = _read_split(root / eval_set.split)
    else:
        stems = sorted(str(p.relative_to(img_dir))[: -len(eval_set.img_suffix)]
                       for p in img_dir.rglob(f"*{eval_set.img_suffix}") if p.is_file())
        if not stems:
            raise OvsegError(f"{eval_set.name}: no *{eval_set.img_suffix} images under {img_dir}")
    samples = [SamplePaths(s, img_dir / f"{s}{eval_set.img_suffix}", ann_dir / f"{s}{eval_set.seg_suffix}")
               for s in stems]
    _check_exist(eval_set, root, samples)
    return root, samples


def _read_split(path: Path) -> list[str]:
    stems = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not stems:
        raise OvsegError(f"{path}: the image list is empty")
    return stems


def _check_exist(eval_set: EvalSet, root: Path, samples: list[SamplePaths]) -> None:
    for kind in ("image", "label"):
        absent = [getattr(s, kind) for s in samples if not getattr(s, kind).is_file()]
        if absent:
            shown = ", ".join(str(p.relative_to(root)) for p in absent[:5])
            source = eval_set.split if eval_set.split else eval_set.img_dir
            raise OvsegError(f"{eval_set.name}: {len(absent)} of {len(samples)} {kind}s listed by {source} are "
                             f"missing (e.g. {shown}{' …' if len(absent) > 5 else ''})")


def read_label(path: str | Path) -> np.ndarray:
    """(H, W) integer index map of a label PNG (palette indices kept, never converted to colours)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise OvsegError(f"{path}: label map has mode {img.mode}; expected a single-channel index map "
                                 "(L or P), not a colour rendering")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise OvsegError(f"{path}: not a readable label map ({type(e).__name__})") from e


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB as stored (EXIF orientation not applied)."""
    try:
        with Image.open(path) as img:
            rgb = to_rgb_array(img)
        return rgb if rgb.flags.writeable else rgb.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise OvsegError(f"{path}: not a readable image ({type(e).__name__})") from e


def map_label(raw: np.ndarray, reduce_zero_label: bool) -> np.ndarray:
    """Raw label values -> evaluated indices (int64): with ``reduce_zero_label`` 0 → 255, k → k − 1."""
    label = raw.astype(np.int64)
    if reduce_zero_label:
        label = np.where(label == 0, IGNORE_INDEX, np.where(label == IGNORE_INDEX, IGNORE_INDEX, label - 1))
    return label


class SegDataset(torch.utils.data.Dataset):
    """Samples of one benchmark, prepared for the harness (resize to ``short_side`` …, normalise).

    Items are ``Sample``s; a bad file gives an ``OvsegError`` instance as the item (raised by the loop), so
    that the one-line message survives the loader's worker processes.
    """

    def __init__(self, eval_set: EvalSet, samples: list[SamplePaths], short_side: int = 448,
                 max_long_side: int = 2048, min_side: int = 16):
        self.eval_set, self.samples = eval_set, samples
        self.scale = (short_side, max_long_side, min_side)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample | OvsegError:
        try:
            return self.load(index)
        except OvsegError as e:
            return e

    def load(self, index: int) -> Sample:
        paths = self.samples[index]
        rgb, raw = read_image(paths.image), read_label(paths.label)
        if raw.shape != rgb.shape[:2]:
            raise OvsegError(f"{paths.label}: label is {raw.shape[1]}×{raw.shape[0]} but its image "
                             f"{paths.image.name} is {rgb.shape[1]}×{rgb.shape[0]} (width×height)")
        label = map_label(raw, self.eval_set.reduce_zero_label)
        bad = ((label < 0) | (label >= self.eval_set.num_classes)) & (label != IGNORE_INDEX)
        values = tuple(int(v) for v in np.unique(raw[bad])) if bad.any() else ()
        return Sample(name=paths.name, image=prepare_image(rgb, *self.scale), size=rgb.shape[:2],
                      label=torch.from_numpy(label), invalid=int(bad.sum()), invalid_values=values,
                      label_path=str(paths.label))


def first_item(batch: list) -> object:
    """DataLoader collate for batch_size=1 that keeps the item as is."""
    return batch[0]
