"""Labelled images for zero-shot classification: a class-name list and the images with their class index.

Two layouts, as ImageNet is commonly kept:

- a folder of class sub-folders (torchvision's ImageFolder layout), each named by a class name of the list or,
  for ``imagenet``, by its WordNet id (``n01440764``);
- a CSV with a header naming an ``image`` (or ``image_id``, the original's ``val.csv``) and a ``label``
  column: the label an index into the list, a class name or a WordNet id; image paths relative to the CSV.

Everything is checked here, before a model runs: a missing file, a class the list does not have, a label out
of range. The class list is ``imagenet`` (the 1000 names of the original's ``imagenet_template.py``, shipped
beside this module with their WordNet ids) or a file of names, one per line or a JSON list.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from ..errors import ConfigError, ImageError, OvsegError
from ..images import MAX_IMAGE_PIXELS, load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"}
MAX_CLASS_FILE_BYTES = 16 << 20  # a class list is text; anything larger is not one


@dataclass(frozen=True)
class ClassList:
    """Class names in index order (synonyms as ``a|b``); WordNet ids in the same order where known."""

    names: list[str]
    wnids: list[str] | None = None

    def lookup(self) -> dict[str, list[int]]:
        """Every way a folder or CSV label may name a class -> the indices it names (several: ambiguous)."""
        table: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(self.names):
            for alias in {name, *name.split("|")}:
                table[alias.strip().casefold()].append(i)
        for i, wnid in enumerate(self.wnids or []):
            table[wnid.casefold()].append(i)
        return table


@dataclass(frozen=True)
class LabelledImages:
    """The images to score (paths) and their class indices into ``classes.names``; ``source`` the folder or CSV."""

    paths: list[Path]
    labels: list[int]
    classes: ClassList
    source: Path


def load_class_list(spec: str) -> ClassList:
    """``imagenet`` or a file of names (one per line, or a JSON list of strings)."""
    if spec == "imagenet":
        here = files(__package__)
        return ClassList(_lines(here.joinpath("imagenet_classes.txt").read_text("utf-8"), "imagenet"),
                         _lines(here.joinpath("imagenet_wnids.txt").read_text("utf-8"), "imagenet"))
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"evaluate.cls.classes: {spec}: no such file (give 'imagenet' or a file of class names)")
    if path.stat().st_size > MAX_CLASS_FILE_BYTES:
        raise ConfigError(f"evaluate.cls.classes: {spec}: over {MAX_CLASS_FILE_BYTES >> 20} MiB, not a class list")
    text = path.read_text("utf-8", errors="replace")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return ClassList(_json_names(text, spec))
    return ClassList(_lines(text, spec))


def _lines(text: str, where: str) -> list[str]:
    lines = [line.strip() for line in text.rstrip().splitlines()]
    for number, line in enumerate(lines, 1):
        if not line:  # a silent skip would shift every later index
            raise ConfigError(f"evaluate.cls.classes: {where}, line {number}: empty class name")
    if not lines:
        raise ConfigError(f"evaluate.cls.classes: {where}: no class names")
    return lines


def _json_names(text: str, where: str) -> list[str]:
    try:
        names = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"evaluate.cls.classes: {where}: not valid JSON ({e})") from e
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"evaluate.cls.classes: {where}: expected a non-empty JSON list of class names")
    return [n.strip() for n in names]


def read_labelled_images(cls_cfg: DictConfig) -> LabelledImages:
    """The images and labels that ``evaluate.cls`` names, checked; ``max_images`` keeps N spread evenly over
    them (in a class-sorted folder the first N would all be one class)."""
    check_transform(cls_cfg.resize, cls_cfg.crop_size)
    if not cls_cfg.data_root:
        raise ConfigError("evaluate.cls.data_root: not set (a folder of class sub-folders or an image,label CSV)")
    root, classes = Path(cls_cfg.data_root), load_class_list(cls_cfg.classes)
    if root.is_dir():
        paths, labels = _read_folder(root, classes, cls_cfg.classes)
    elif root.is_file():
        paths, labels = _read_csv(root, classes)
    else:
        raise ConfigError(f"evaluate.cls.data_root: {root}: no such folder or CSV file")
    limit = cls_cfg.max_images
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"evaluate.cls.max_images: must be at least 1, got {limit}")
        if limit < len(paths):
            keep = np.linspace(0, len(paths), limit, endpoint=False).astype(int).tolist()
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return LabelledImages(paths, labels, classes, root)


def check_transform(resize: int, crop_size: int) -> None:
    if crop_size < 1 or resize < crop_size:
        raise ConfigError(f"evaluate.cls: crop_size ({crop_size}) must be at least 1 and at most resize ({resize})")


def _read_folder(root: Path, classes: ClassList, spec: str) -> tuple[list[Path], list[int]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ConfigError(f"evaluate.cls.data_root: {root}: no class sub-folders (expected <class>/<image> files)")
    table = classes.lookup()
    missing = [f.name for f in folders if f.name.casefold() not in table]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"evaluate.cls.data_root: {root}: {len(missing)} class folder(s) not in the class list "
                          f"'{spec}': {shown}")
    paths, labels = [], []
    for folder in folders:
        label = _unique(table, folder.name, f"evaluate.cls.data_root: {folder}")
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += images
        labels += [label] * len(images)
    if not paths:
        raise ConfigError(f"evaluate.cls.data_root: {root}: no images in its class folders "
                          f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, labels


def _read_csv(path: Path, classes: ClassList) -> tuple[list[Path], list[int]]:
    table, paths, labels = classes.lookup(), [], []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fp:
        reader = csv.DictReader(fp)
        fields = [f.strip() for f in reader.fieldnames or []]
        image_key = next((k for k in ("image", "image_id") if k in fields), None)
        if image_key is None or "label" not in fields:
            raise ConfigError(f"evaluate.cls.data_root: {path}: expected a header with 'image' (or 'image_id') and "
                              f"'label' columns, got {fields}")
        reader.fieldnames = fields
        for row in reader:
            where = f"evaluate.cls.data_root: {path}, line {reader.line_num}"
            image = path.parent / (row[image_key] or "").strip()
            if not image.is_file():
                raise ConfigError(f"{where}: image {image}: no such file")
            paths.append(image)
            labels.append(_label(row["label"] or "", classes, table, where))
    if not paths:
        raise ConfigError(f"evaluate.cls.data_root: {path}: no rows")
    return paths, labels


def _label(value: str, classes: ClassList, table: dict[str, list[int]], where: str) -> int:
    value = value.strip()
    if value.lstrip("-").isdigit():
        index = int(value)
        if not 0 <= index < len(classes.names):
            raise ConfigError(f"{where}: label {index} out of range 0..{len(classes.names) - 1}")
        return index
    if value.casefold() not in table:
        raise ConfigError(f"{where}: label '{value}' is not in the class list")
    return _unique(table, value, where)


def _unique(table: dict[str, list[int]], key: str, where: str) -> int:
    indices = sorted(set(table[key.casefold()]))
    if len(indices) > 1:
        raise ConfigError(f"{where}: '{key}' names classes {indices} of the list; use an index or WordNet id")
    return indices[0]


def center_crop(rgb: np.ndarray, resize: int, crop: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, crop, crop) uint8: shorter side to ``resize`` with PIL's bilinear filter, then
    the centre crop; the original's torchvision ``Resize(256)`` + ``CenterCrop(224)`` on PIL images, pixel
    for pixel (same size rounding, same filter)."""
    h, w = rgb.shape[:2]
    new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    if new_w * new_h > MAX_IMAGE_PIXELS:  # a sliver of an image would become a huge one
        raise ImageError(f"{w}×{h} image: its aspect ratio would resize it to {new_w}×{new_h} pixels")
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return torch.from_numpy(resized[top : top + crop, left : left + crop].copy()).permute(2, 0, 1)


class CroppedImages(torch.utils.data.Dataset):
    """(3, crop, crop) uint8 image and its label per item; a user error is returned, to be raised by the caller
    (a DataLoader worker would wrap it in a traceback)."""

    def __init__(self, paths: list[Path], labels: list[int], resize: int, crop: int):
        self.paths, self.labels, self.resize, self.crop = paths, labels, resize, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | OvsegError:
        path = self.paths[index]
        try:
            return center_crop(load_image(path), self.resize, self.crop), self.labels[index]
        except ImageError as e:
            return e if str(path) in str(e) else ImageError(f"{path}: {e}")


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor] | OvsegError:
    """Stacked images and labels, or the batch's first user error."""
    error = next((item for item in batch if isinstance(item, OvsegError)), None)
    if error is not None:
        return error
    return torch.stack([image for image, _ in batch]), torch.tensor([label for _, label in batch])
