"""Validation during training: a ``Validator`` scores the model; the trainer keeps the best checkpoint.

Two kinds, chosen by ``evaluate.val_dataset`` (``build_validator``): the embedded scenes' validation split
(``SceneValidator``, the default when training on the scenes), and any benchmark of the evaluation registry
(``EvalSetValidator``, read from ``evaluate.seg.data_root``). Their ground truth never enters training;
the test splits are never validated on.
"""

from __future__ import annotations

from typing import Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import schema
from ..data.builder import scene_split
from ..data.scenes.dataset import class_names
from ..evaluation import evaluate, find_samples, get_eval_set
from ..evaluation.metrics import ConfusionMatrix
from ..inference import Segmenter
from ..model import OVSegmentor

Metrics = dict[str, float | None]


class Validator(Protocol):
    """``validator(model) -> {"miou": percent, "bg_thresh": the best candidate threshold or None}``; the
    model is left in the training mode it came in."""

    def __call__(self, model: OVSegmentor) -> Metrics: ...


def build_validator(cfg: DictConfig) -> Validator | None:
    """The configured validation: ``evaluate.val_dataset`` ``scenes`` or a registry name (``voc``, ``ade20k``
    …); unset, the scenes' split when training on them and none otherwise."""
    name = cfg.evaluate.val_dataset
    if name == "scenes" or (name is None and cfg.data.type == "scenes"):
        return SceneValidator(cfg)
    if name is None:
        return None
    return EvalSetValidator(name, cfg.evaluate.seg, list(cfg.evaluate.val_bg_thresholds), cfg.data.num_workers)


def best_threshold(mious: dict[float | None, float]) -> Metrics:
    """The candidate background threshold with the highest mIoU (the first of equals)."""
    thresh, miou = max(mious.items(), key=lambda kv: kv[1])
    return {"miou": miou, "bg_thresh": thresh}


class SceneValidator:
    """The embedded scenes' validation split (``data.scenes.val_size`` scenes) at the training image size."""

    def __init__(self, cfg: DictConfig):
        self.dataset = scene_split(cfg, "val")
        self.thresholds = list(cfg.evaluate.val_bg_thresholds)
        self.image_size, self.seg = cfg.data.image_size, cfg.evaluate.seg

    def __call__(self, model: OVSegmentor) -> Metrics:
        results = evaluate_scenes(model, self.dataset, class_names(), self.thresholds, self.image_size, self.seg)
        return best_threshold({t: r["miou"] for t, r in results.items()})


class EvalSetValidator:
    """A dataset of the evaluation registry (``evaluation.registry``), scored by ``ovseg.evaluation.evaluate``
    with the ``evaluate.seg`` harness; where the dataset scores background, once per candidate threshold."""

    def __init__(self, name: str, seg: DictConfig, thresholds: list[float], num_workers: int = 0):
        self.eval_set, self.seg, self.num_workers = get_eval_set(name), seg, num_workers
        self.root, paths = find_samples(self.eval_set, seg.data_root)  # a wrong folder fails before training
        self.size = len(paths)
        if not self.eval_set.background:
            self.thresholds: list[float | None] = [None]
        else:
            self.thresholds = list(thresholds) if seg.background == "threshold" else [seg.bg_thresh]

    def __call__(self, model: OVSegmentor) -> Metrics:
        was_training = model.training
        try:
            segmenter = Segmenter(model, self.seg)
            mious = {t: self._miou(segmenter, t) for t in self.thresholds}
        finally:
            model.train(was_training)
        return best_threshold(mious)

    def _miou(self, segmenter: Segmenter, bg_thresh: float | None) -> float:
        seg = OmegaConf.merge(self.seg, {"bg_thresh": bg_thresh})
        # limit = every image: a validation subset is expected, so no warning about the standard size
        result = evaluate(segmenter, self.eval_set.name, self.root, limit=self.size, seg_cfg=seg,
                          num_workers=self.num_workers, progress=False)
        return result.miou if result.miou is not None else 0.0


def scene_seg_config(image_size: int, seg: DictConfig | None = None) -> DictConfig:
    """The harness on small square scenes: one window, no resize; the scoring settings (template, top-k,
    background, refinement, groups or patches, flip) from ``seg`` (an ``evaluate.seg`` section; default:
    the schema's)."""
    cfg = schema().evaluate.seg
    if seg is not None:
        cfg.merge_with({k: seg[k] for k in ("template", "top_k", "background", "refine", "refine_iterations",
                                            "refine_temperature", "scoring", "flip", "rotate")})
    cfg.merge_with({"dataset": None, "mode": "whole", "short_side": image_size, "max_long_side": image_size,
                    "crop_size": image_size, "stride": image_size})
    return cfg


@torch.no_grad()
def evaluate_scenes(model: OVSegmentor, dataset, class_names: list[str], thresholds: list[float],
                    image_size: int, seg: DictConfig | None = None) -> dict[float, dict]:
    """{bg_thresh: {"miou", "per_class_iou"}} over ``dataset`` (``render(i)`` -> uint8 image, labels), scored
    with the ``evaluate.seg`` settings ``seg`` (see ``scene_seg_config``)."""
    was_training = model.training
    segmenter = Segmenter(model.eval(), scene_seg_config(image_size, seg))
    thresholds = thresholds if segmenter.cfg.background == "threshold" else [0.0]
    names = ["background"] + list(class_names)
    matrices = {t: ConfusionMatrix(len(names)) for t in thresholds}
    for i in range(len(dataset)):
        image, labels = dataset.render(i)
        gt = torch.from_numpy(labels).long()
        for t in thresholds:
            matrices[t].update(segmenter.predict(image, class_names, bg_thresh=t).labels, gt)
    model.train(was_training)
    results = {}
    for t, matrix in matrices.items():
        scores = matrix.scores()
        results[t] = {"miou": scores.miou * 100,
                      "per_class_iou": {name: float(v) * 100 for name, v in zip(names, scores.iou, strict=True)}}
    return results
