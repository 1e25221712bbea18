"""Zero-shot mIoU on the embedded dataset's validation/test splits (ground truth never used in training)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ..config import schema
from ..evaluation.metrics import ConfusionMatrix
from ..inference import Segmenter
from ..model import OVSegmentor


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

