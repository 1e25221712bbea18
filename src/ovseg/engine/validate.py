"""Zero-shot mIoU on the embedded dataset's validation/test splits (ground truth never used in training)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ..config import schema
from ..inference import Segmenter
from ..model import OVSegmentor


def scene_seg_config(image_size: int, template: str = "simple", background: str = "threshold") -> DictConfig:
    """The harness on small square scenes: one window, no resize."""
    cfg = schema().evaluate.seg
    cfg.merge_with({"dataset": None, "mode": "whole", "short_side": image_size, "max_long_side": image_size,
                    "crop_size": image_size, "stride": image_size, "template": template, "background": background})
    return cfg


def confusion(gt: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore: int = 255) -> torch.Tensor:
    """(C, C) counts, rows = ground truth, columns = prediction; ``ignore`` pixels skipped."""
    keep = gt != ignore
    return torch.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, -1)


def iou_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class IoU (NaN for classes absent from both ground truth and prediction)."""
    matrix = matrix.double()
    inter = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))


@torch.no_grad()
def evaluate_scenes(model: OVSegmentor, dataset, class_names: list[str], thresholds: list[float],
                    image_size: int, template: str = "simple", background: str = "threshold") -> dict[float, dict]:
    """{bg_thresh: {"miou", "per_class_iou"}} over ``dataset`` (``render(i)`` -> uint8 image, labels)."""
    was_training = model.training
    segmenter = Segmenter(model.eval(), scene_seg_config(image_size, template, background))
    thresholds = thresholds if background == "threshold" else [0.0]
    n = len(class_names) + 1
    matrices = {t: torch.zeros(n, n, dtype=torch.long) for t in thresholds}
    for i in range(len(dataset)):
        image, labels = dataset.render(i)
        gt = torch.from_numpy(labels).long().flatten()
        for t in thresholds:
            pred = segmenter.predict(image, class_names, bg_thresh=t)
            matrices[t] += confusion(gt, pred.labels.flatten(), n)
    model.train(was_training)
    names = ["background"] + list(class_names)
    results = {}
    for t, matrix in matrices.items():
        iou = iou_from_confusion(matrix)
        results[t] = {"miou": float(torch.nanmean(iou)) * 100,
                      "per_class_iou": {name: float(v) * 100 for name, v in zip(names, iou, strict=False)}}
    return results

