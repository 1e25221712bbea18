"""Validation during training: a ``Validator`` scores the model; the trainer keeps the best checkpoints.

Segmentation, chosen by ``evaluate.val_dataset``: the embedded scenes' validation split (``SceneValidator``,
the default when training on the scenes) or any benchmark of the evaluation registry (``EvalSetValidator``,
read from ``evaluate.seg.data_root``, VOC in the paper's recipe). Classification, when
``evaluate.cls.data_root`` is set: zero-shot top-1 / top-5 on labelled images (``ClassificationValidator``,
ImageNet in the paper's recipe). ``build_validator`` runs every configured one and merges their metrics.
Their ground truth never enters training; the test splits are never validated on.
"""

from __future__ import annotations

from typing import Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import schema
from ..data.builder import scene_split
from ..data.scenes.dataset import class_names
from ..evaluation import evaluate, evaluate_classification, find_samples, get_eval_set, read_labelled_images
from ..evaluation.metrics import ConfusionMatrix
from ..inference import Segmenter
from ..model import OVSegmentor

Metrics = dict[str, float | None]


class Validator(Protocol):
    """``validator(model) -> metrics``: segmentation gives ``miou`` (percent) and ``bg_thresh`` (the best
    candidate threshold or None), classification ``top1`` and ``top5`` (percent); the model is left in the
    training mode it came in."""

    def __call__(self, model: OVSegmentor) -> Metrics: ...


def build_validator(cfg: DictConfig) -> Validator | None:
    """Every configured validation (segmentation and/or classification) as one, or None when there is none.
    A wrong folder or class list fails here, before the first training step."""
    parts = [v for v in (segmentation_validator(cfg), classification_validator(cfg)) if v is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Validators(parts)


def segmentation_validator(cfg: DictConfig) -> Validator | None:
    """``evaluate.val_dataset`` ``scenes`` or a registry name (``voc``, ``ade20k`` …); unset, the scenes'
    split when training on them and none otherwise."""
    name = cfg.evaluate.val_dataset
    if name == "scenes" or (name is None and cfg.data.type == "scenes"):
        return SceneValidator(cfg)
    if name is None:
        return None
    return EvalSetValidator(name, cfg.evaluate.seg, list(cfg.evaluate.val_bg_thresholds), cfg.data.num_workers,
                            cfg.evaluate.val_max_images)


def classification_validator(cfg: DictConfig) -> Validator | None:
    return ClassificationValidator(cfg.evaluate.cls) if cfg.evaluate.cls.data_root else None


class Validators:
    """Several validations run one after the other; their metrics merged into one record."""

    def __init__(self, parts: list[Validator]):
        self.parts = parts

    def __call__(self, model: OVSegmentor) -> Metrics:
        metrics: Metrics = {}
        for part in self.parts:
            metrics.update(part(model))
        return metrics


class ClassificationValidator:
    """Zero-shot classification of labelled images (``evaluate.cls``), as the original's ImageNet check."""

    def __init__(self, cls_cfg: DictConfig):
        self.cfg = cls_cfg
        self.images = read_labelled_images(cls_cfg)  # a wrong folder, CSV or class list fails before training

    def __call__(self, model: OVSegmentor) -> Metrics:  # rank 0 only (the trainer's choice): not sharded
        result = evaluate_classification(model, self.cfg, progress=False, shard=False, images=self.images)
        return {"top1": result.top1, "top5": result.top5}


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

    def __init__(self, name: str, seg: DictConfig, thresholds: list[float], num_workers: int = 0,
                 max_images: int | None = None):
        self.eval_set, self.seg, self.num_workers = get_eval_set(name), seg, num_workers
        self.root, paths = find_samples(self.eval_set, seg.data_root)  # a wrong folder fails before training
        self.size = len(paths) if max_images is None else min(len(paths), max_images)
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
                                            "refine_temperature", "refine_dilations", "scoring", "flip", "rotate")})
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
