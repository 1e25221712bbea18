"""Pixel statistics of label maps: the share of the pixels each class covers.

One helper for ``Prediction.present``, the demo's legend, the web page's legend rows and the quickstart's
overlays. It imports nothing from ovseg, so any layer may use it.
"""

from __future__ import annotations

import numpy as np
import torch


def pixel_shares(labels: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray | torch.Tensor:
    """The share of ``labels``' pixels holding each class: ``labels`` is a map of class indices in
    ``[0, num_classes)`` (any shape); the result has ``num_classes`` fractions in [0, 1] that sum to 1,
    index = class, 0 for a class absent from the map.

    A numpy map gives a float64 array (count / number of pixels); a torch tensor gives a float32 tensor on
    the map's device (count / sum of counts), the arithmetic each caller has always used, so that the shares
    they print do not change."""
    if isinstance(labels, torch.Tensor):
        counts = torch.bincount(labels.flatten(), minlength=num_classes).float()
        return counts / counts.sum()
    return np.bincount(labels.ravel(), minlength=num_classes) / labels.size
