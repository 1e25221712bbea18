"""mIoU from a dataset-level confusion matrix, as mmseg 0.18's ``eval_metrics`` computes it.

Rows are ground truth, columns predictions. Ground truth 255 is ignored. Ground truth outside
[0, C) is kept in an extra row: mmseg drops those pixels from the label histogram but still counts the
prediction there (``invalid="mmseg"``, the published numbers' behaviour); ``invalid="ignore"`` treats them
like 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = 255


@dataclass
class Scores:
    """iou and acc: (C,) float64 in [0, 1], NaN for a class absent from both ground truth and predictions
    (iou) or from ground truth (acc); miou / macc: their NaN-mean; aacc: pixel accuracy."""

    iou: np.ndarray
    acc: np.ndarray
    miou: float
    macc: float
    aacc: float


class ConfusionMatrix:
    """Accumulates (C + 1, C) pixel counts; row C holds ground truth outside the class range.

    On a GPU the update never waits for the device (no host sync); a prediction outside [0, C) is then
    reported by the next ``scores()``.
    """

    def __init__(self, num_classes: int, device: str | torch.device = "cpu"):
        if not 0 < num_classes < IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 1..254, got {num_classes}")
        self.num_classes = num_classes
        # (C + 1) * C cells, then one bin for ignored pixels and bad predictions
        self._counts = torch.zeros((num_classes + 1) * num_classes + 1, dtype=torch.int64, device=device)
        self._bad_pred = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def mat(self) -> torch.Tensor:
        """(C + 1, C) int64 counts, rows ground truth (row C: out of range), columns predictions."""
        c = self.num_classes
        return self._counts[: (c + 1) * c].view(c + 1, c)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """pred and gt: same-shaped integer maps; pred in [0, C), gt in [0, C) ∪ {255} ∪ out of range."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(gt.shape)} differ in shape")
        c, dev = self.num_classes, self._counts.device
        pred = pred.reshape(-1).to(dev, non_blocking=True).long()
        gt = gt.reshape(-1).to(dev, non_blocking=True).long()
        bad_pred = (pred < 0) | (pred >= c)
        row = torch.where((gt < 0) | (gt >= c), c, gt)
        idx = torch.where((gt == IGNORE_INDEX) | bad_pred, self._counts.numel() - 1, row * c + pred)
        if idx.is_cuda:
            self._counts.index_add_(0, idx, torch.ones_like(idx))
        else:
            self._counts += torch.bincount(idx, minlength=self._counts.numel())
        self._bad_pred += bad_pred.sum()
        if not idx.is_cuda:
            self._check()

    def _check(self) -> None:
        if int(self._bad_pred):
            raise ValueError(f"{int(self._bad_pred)} predictions outside [0, {self.num_classes})")

    def merge(self, other: ConfusionMatrix) -> None:
        self._counts += other._counts.to(self._counts.device)
        self._bad_pred += other._bad_pred.to(self._bad_pred.device)

    def invalid_pixels(self) -> int:
        return int(self.mat[self.num_classes].sum())

    def scores(self, invalid: str = "mmseg") -> Scores:
        """Per-class IoU and accuracy; ``invalid``: "mmseg" counts predictions on out-of-range ground
        truth as false positives (as mmseg does), "ignore" leaves those pixels out."""
        if invalid not in ("mmseg", "ignore"):
            raise ValueError(f"invalid must be 'mmseg' or 'ignore', got {invalid!r}")
        self._check()
        mat = self.mat.double().cpu().numpy()
        valid = mat[: self.num_classes]
        inter = np.diag(valid)
        area_label = valid.sum(axis=1)
        area_pred = (mat if invalid == "mmseg" else valid).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area_label + area_pred - inter)
            acc = inter / area_label
            aacc = inter.sum() / area_label.sum() if area_label.sum() else float("nan")
        return Scores(iou=iou, acc=acc, miou=_nanmean(iou), macc=_nanmean(acc), aacc=float(aacc))


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
