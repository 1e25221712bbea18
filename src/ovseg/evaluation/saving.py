"""An evaluation's predictions on disk, as mmseg's ``--format-only`` / ``--show-dir`` give them: one paletted PNG
per image named by the dataset's id (pixel value = class index in the benchmark's order, so the file is read
back exactly as a label map), a ``classes.json`` naming the indices, and side-by-side pictures of the first
images (photo | ground truth | prediction) for a look by eye.

    evaluate(seg, "voc", root, save=SaveOptions(predictions="out/voc_pred", overlays="out/voc_show"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import OvsegError
from ..fileio import atomic_write, atomic_write_json
from ..label_stats import pixel_shares
from ..viz.legend import add_legend
from ..viz.overlay import overlay_labels, side_by_side
from ..viz.palette import dataset_palette, paletted
from .datasets import IGNORE_INDEX, Sample, SamplePaths, read_image
from .registry import EvalSet


@dataclass(frozen=True)
class SaveOptions:
    """Where an evaluation writes what it predicted. ``predictions``: a folder for ``<id>.png`` label maps and
    ``classes.json``; ``overlays``: a folder for ``<id>.png`` side-by-side pictures of the first
    ``overlay_count`` images. None: not written. Neither folder may lie inside the benchmark's folder."""

    predictions: str | Path | None = None
    overlays: str | Path | None = None
    overlay_count: int = 8


class PredictionWriter:
    """Called with each (sample, predicted labels) of the evaluation loop, in the dataset's order. Every folder
    and file name is checked at construction, so a mistake stops the run before any image is segmented."""

    def __init__(self, options: SaveOptions, eval_set: EvalSet, root: Path, samples: list[SamplePaths]):
        if options.overlay_count < 0:
            raise OvsegError(f"--overlay-count must be at least 0, got {options.overlay_count}")
        self.eval_set, self.count = eval_set, options.overlay_count
        self.folders = {kind: _outside(Path(folder), root, flag)
                        for kind, folder, flag in (("predictions", options.predictions, "--save-predictions"),
                                                   ("overlays", options.overlays, "--save-overlays"))
                        if folder is not None}
        self.images = {s.name: s.image for s in samples}
        for folder in self.folders.values():
            for name in self.images:
                output_path(folder, name)
        self.palette = dataset_palette(eval_set.name)
        self.drawn = 0

    def start(self) -> None:
        """Write ``classes.json`` (before any prediction: an interrupted run's files are still described)."""
        if "predictions" in self.folders:
            atomic_write_json(self.folders["predictions"] / "classes.json", classes_record(self.eval_set, self.palette))

    def __call__(self, sample: Sample, labels: torch.Tensor) -> None:
        pred = labels.cpu().numpy()
        if pred.size and (pred.min() < 0 or pred.max() > 255):
            raise ValueError(f"{sample.name}: predicted labels {pred.min()}..{pred.max()} do not fit a paletted PNG")
        if "predictions" in self.folders:
            image = paletted(pred, self.palette)
            atomic_write(output_path(self.folders["predictions"], sample.name),
                         lambda tmp: image.save(tmp, format="PNG"))
        if "overlays" in self.folders and self.drawn < self.count:
            picture = self.overlay(read_image(self.images[sample.name]), sample.label.numpy(), pred)
            atomic_write(output_path(self.folders["overlays"], sample.name),
                         lambda tmp: picture.save(tmp, format="PNG"))
            self.drawn += 1

    def overlay(self, rgb: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> Image.Image:
        """photo | ground truth | prediction, each class blended at half strength (a background class left as
        the photo; ignored ground truth in VOC's pale "void" colour), with a legend of the classes in either map."""
        background = 0 if self.eval_set.background else None
        truth = np.minimum(truth, IGNORE_INDEX).astype(np.uint8)  # beyond 255 (16-bit files): shown as void
        panels = [rgb, overlay_labels(rgb, truth, self.palette, background=background),
                  overlay_labels(rgb, pred.astype(np.uint8), self.palette, background=background)]
        return add_legend(Image.fromarray(side_by_side(panels)), self.legend(truth, pred))

    def legend(self, truth: np.ndarray, pred: np.ndarray) -> list[tuple[str, tuple[int, int, int], float]]:
        """(name, colour, share of the predicted pixels) of every class in the ground truth or the prediction,
        largest predicted share first."""
        names, n = self.eval_set.class_names, self.eval_set.num_classes
        shares = pixel_shares(pred, n)[:n]
        present = (shares > 0) | (np.bincount(truth[truth < n].ravel(), minlength=n)[:n] > 0)
        order = sorted(np.flatnonzero(present), key=lambda k: -shares[k])
        return [(names[k], tuple(int(c) for c in self.palette[k]), float(shares[k])) for k in order]


def classes_record(eval_set: EvalSet, palette: np.ndarray) -> dict:
    """What ``classes.json`` holds: the benchmark, its class names in index order, their RGB colours, and the
    background index (None where the benchmark has no background class)."""
    n = eval_set.num_classes
    return {"dataset": eval_set.name, "classes": eval_set.class_names,
            "palette": [[int(c) for c in rgb] for rgb in palette[:n]],
            "background": 0 if eval_set.background else None}


def output_path(folder: Path, name: str) -> Path:
    """``folder/<name>.png`` (ids with sub-folders keep them, as Cityscapes' ``city/stem``); an id that would
    leave ``folder`` (an absolute path or ``..`` in an image list) is refused."""
    path = Path(os.path.normpath(folder / f"{name}.png"))
    if not name or Path(name).is_absolute() or not path.is_relative_to(os.path.normpath(folder)):
        raise OvsegError(f"image id {name!r} would be written outside {folder}; fix the dataset's image list")
    return path


def _outside(folder: Path, root: Path, flag: str) -> Path:
    """``folder`` if it lies outside the benchmark's folder ``root`` (links followed), else a one-line refusal."""
    if folder.resolve().is_relative_to(root.resolve()):
        raise OvsegError(f"{flag} {folder}: inside the dataset folder {root}; choose a folder outside it "
                         "(the benchmark's files are never written to)")
    return folder
