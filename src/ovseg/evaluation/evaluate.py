"""The evaluation loop: a benchmark, the harness, a dataset-level confusion matrix, results.json.

    seg = ovseg.Segmenter.from_checkpoint("ovsegmentor.pth", seg_cfg=load_eval_config("voc").evaluate.seg)
    result = evaluate(seg, data_root="data/VOCdevkit/VOC2012", output_dir="out/voc")
    result.miou        # percent, 53.8 for the paper's model
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..config import apply_opts, load_config, schema, to_container
from ..errors import OvsegError
from ..factory import preset_path
from ..fileio import atomic_write_json
from ..inference.precision import describe_precision
from ..inference.segmenter import Segmenter
from .datasets import Sample, SegDataset, find_samples, first_item
from .metrics import ConfusionMatrix
from .predictor import HarnessPredictor
from .registry import EvalSet, get_eval_set
from .saving import PredictionWriter, SaveOptions

log = logging.getLogger(__name__)
INVALID_POLICIES = ("mmseg", "ignore", "error")
Predictor = Callable[[list[Sample]], list[torch.Tensor]]
OnLabels = Callable[[Sample, torch.Tensor], None]


@dataclass
class InvalidLabels:
    """Ground-truth pixels outside the class range (neither a class nor 255)."""

    pixels: int = 0
    images: int = 0
    values: set[int] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.pixels += sample.invalid
        self.images += 1
        self.values.update(sample.invalid_values)
        if len(self.examples) < 5:
            self.examples.append(sample.label_path)

    def to_dict(self) -> dict:
        return {"pixels": self.pixels, "images": self.images, "values": sorted(self.values),
                "examples": self.examples}


@dataclass
class EvalResult:
    """mIoU and per-class IoU/accuracy in percent (None: class absent from ground truth and predictions)."""

    dataset: str
    miou: float
    macc: float
    aacc: float
    per_class_iou: dict[str, float | None]
    per_class_acc: dict[str, float | None]
    num_images: int
    settings: dict
    invalid_labels: dict
    seconds: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("dataset", "miou", "macc", "aacc", "num_images", "per_class_iou",
                                              "per_class_acc", "invalid_labels", "seconds", "settings")}

    def write(self, output_dir: str | Path) -> Path:
        """``output_dir/results.json``, written atomically."""
        return atomic_write_json(Path(output_dir) / "results.json", self.to_dict())

    def table(self) -> str:
        """Per-class IoU/Acc table plus the summary line."""
        width = max(12, *(len(n) for n in self.per_class_iou))
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
        for name, iou in self.per_class_iou.items():
            lines.append(f"{name:<{width}}  {_pct(iou)}  {_pct(self.per_class_acc[name])}")
        lines.append("-" * (width + 16))
        return "\n".join(lines + [self.summary()])

    def summary(self) -> str:
        return (f"{self.dataset}: mIoU {_pct(self.miou).strip()}  mAcc {_pct(self.macc).strip()}  "
                f"aAcc {_pct(self.aacc).strip()}  ({self.num_images} images, {self.seconds:.1f} s)")


def _pct(value: float | None) -> str:
    return "   n/a" if value is None or math.isnan(value) else f"{value:6.2f}"


def load_eval_config(dataset: str | None = None, cfg: str | Path | None = None,
                     opts: list[str] | None = None) -> DictConfig:
    """Full config for an evaluation: ``cfg`` (default: the dataset's ``test_*.yml``) ← ``dataset`` ← ``opts``."""
    if cfg is None and dataset is None:
        raise OvsegError("give a dataset (--dataset) or a config (--cfg)")
    if cfg is None:
        cfg = preset_path(get_eval_set(dataset).config)
    config = load_config(cfg, None)
    if dataset is not None:
        config = apply_opts(config, [f"evaluate.seg.dataset={get_eval_set(dataset).name}"])
    return apply_opts(config, opts)


def background_threshold(eval_set: EvalSet, bg_thresh: float | None) -> float | None:
    """The threshold to use: required where the benchmark scores background, unused elsewhere."""
    if eval_set.background and bg_thresh is None:
        raise OvsegError(f"{eval_set.name} scores a background class: set evaluate.seg.bg_thresh (spec: VOC 0.95, "
                         "Context 0.35, COCO-Object 0.9)")
    if not eval_set.background and bg_thresh is not None:
        log.info("%s has no background class: bg_thresh %s is not used", eval_set.name, bg_thresh)
        return None
    return bg_thresh


def evaluate(segmenter: Segmenter | None = None, dataset: str | None = None, data_root: str | Path | None = None,
             *, limit: int | None = None, output_dir: str | Path | None = None, invalid: str = "mmseg",
             num_workers: int | None = None, progress: bool = True, predictor: Predictor | None = None,
             seg_cfg: DictConfig | None = None, extra_settings: dict | None = None,
             save: SaveOptions | None = None) -> EvalResult:
    """Zero-shot mIoU of ``segmenter`` on a benchmark with its harness settings (``segmenter.cfg``).

    dataset / data_root default to the config's ``dataset`` / ``data_root``; ``limit`` evaluates the first N
    images; ``invalid``: "mmseg" | "ignore" | "error" for out-of-range ground truth (always counted and
    reported); ``predictor`` replaces the harness (any callable of samples → label maps); ``save`` writes the
    predictions (paletted PNGs, classes.json) and side-by-side pictures (``saving.py``).
    """
    if invalid not in INVALID_POLICIES:
        raise OvsegError(f"invalid-labels policy must be one of {', '.join(INVALID_POLICIES)}, got {invalid!r}")
    if segmenter is None and predictor is None:
        raise OvsegError("evaluate needs a segmenter (or a predictor)")
    if limit is not None and limit < 1:
        raise OvsegError(f"--limit must be at least 1, got {limit}")
    cfg = seg_cfg if seg_cfg is not None else segmenter.cfg if segmenter is not None else schema().evaluate.seg
    eval_set = get_eval_set(dataset or cfg.dataset or "")
    root, paths = find_samples(eval_set, data_root or cfg.data_root)
    if limit:
        paths = paths[:limit]
    elif eval_set.num_val and len(paths) != eval_set.num_val:
        log.warning("%s: %d images found; the standard validation set has %d", eval_set.name, len(paths),
                    eval_set.num_val)
    writer = PredictionWriter(save, eval_set, root, paths) if save is not None else None
    if predictor is None:
        predictor = HarnessPredictor(segmenter, list(eval_set.classes), background_threshold(eval_set, cfg.bg_thresh))
    min_side = segmenter.model.cfg.img_encoder.patch_size if segmenter is not None else 16
    data = SegDataset(eval_set, paths, cfg.short_side, cfg.max_long_side, min_side)
    device = segmenter.device if segmenter is not None else torch.device("cpu")
    start = time.perf_counter()
    if writer is not None:
        writer.start()
    matrix, bad = _run(data, predictor, device, cfg.batch_crops, invalid, num_workers, progress, writer)
    result = _result(eval_set, matrix, bad, len(paths), time.perf_counter() - start, invalid,
                     {"data_root": str(root), "limit": limit, "device": str(device), **_versions(),
                      "precision": describe_precision(cfg.precision, device),
                      **(extra_settings or {}), "seg": to_container(cfg)})
    _report_invalid(eval_set, bad, invalid)
    if output_dir is not None:
        log.info("wrote %s", result.write(output_dir))
    return result


def _versions() -> dict:
    try:
        ovseg_version = version("ovseg")
    except PackageNotFoundError:
        ovseg_version = "unknown"
    return {"ovseg": ovseg_version, "torch": torch.__version__}


def _run(data: SegDataset, predictor: Predictor, device: torch.device, batch_crops: int, invalid: str,
         num_workers: int | None, progress: bool, on_labels: OnLabels | None = None
         ) -> tuple[ConfusionMatrix, InvalidLabels]:
    matrix, bad = ConfusionMatrix(data.eval_set.num_classes, device), InvalidLabels()
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, num_workers=workers,
                                         collate_fn=first_item, pin_memory=torch.device(device).type == "cuda")
    windows = getattr(predictor, "boxes", lambda s: [None])
    pending: list[Sample] = []
    with tqdm(total=len(data), desc=data.eval_set.name, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for item in loader:
            pending.append(_checked(item, invalid, bad))
            if sum(len(windows(s)) for s in pending) >= batch_crops:
                _score(pending, predictor, matrix, bar, on_labels)
        _score(pending, predictor, matrix, bar, on_labels)
    return matrix, bad


def _checked(item: Sample | OvsegError, invalid: str, bad: InvalidLabels) -> Sample:
    if isinstance(item, OvsegError):
        raise item
    if item.invalid:
        if invalid == "error":
            raise OvsegError(f"{item.label_path}: {item.invalid} pixels carry labels outside the class range "
                             f"(values {list(item.invalid_values)})")
        bad.add(item)
    return item


def _score(pending: list[Sample], predictor: Predictor, matrix: ConfusionMatrix, bar: tqdm,
           on_labels: OnLabels | None) -> None:
    if not pending:
        return
    for sample, labels in zip(pending, predictor(pending), strict=True):
        matrix.update(labels, sample.label)
        if on_labels is not None:
            on_labels(sample, labels)
    bar.update(len(pending))
    if bar.n % 50 < len(pending) or bar.n == bar.total:
        bar.set_postfix(mIoU=f"{100 * matrix.scores().miou:.1f}", refresh=False)
    pending.clear()


def _result(eval_set: EvalSet, matrix: ConfusionMatrix, bad: InvalidLabels, num_images: int, seconds: float,
            invalid: str, settings: dict) -> EvalResult:
    s = matrix.scores("ignore" if invalid == "ignore" else "mmseg")
    names = eval_set.class_names
    per_iou = {n: _percent(v) for n, v in zip(names, s.iou, strict=True)}
    per_acc = {n: _percent(v) for n, v in zip(names, s.acc, strict=True)}
    settings = {"dataset": eval_set.name, "invalid_labels": invalid, "num_classes": eval_set.num_classes, **settings}
    return EvalResult(dataset=eval_set.name, miou=_percent(s.miou), macc=_percent(s.macc), aacc=_percent(s.aacc),
                      per_class_iou=per_iou, per_class_acc=per_acc, num_images=num_images, settings=settings,
                      invalid_labels=bad.to_dict(), seconds=round(seconds, 2))


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)


def _report_invalid(eval_set: EvalSet, bad: InvalidLabels, invalid: str) -> None:
    if not bad.pixels:
        return
    how = "left out" if invalid == "ignore" else "counted as mmseg does (their predictions are false positives)"
    log.warning("%s: %d pixels in %d label maps lie outside 0..%d and 255 (values %s, e.g. %s); %s.%s",
                eval_set.name, bad.pixels, bad.images, eval_set.num_classes - 1, sorted(bad.values)[:10],
                bad.examples[0], how, f" Hint: {eval_set.invalid_hint}" if eval_set.invalid_hint else "")
