"""pixel_shares: the share of the pixels per class, with each input type's arithmetic."""

from __future__ import annotations

import numpy as np
import torch

from ovseg.label_stats import pixel_shares


def test_pixel_shares_of_a_small_map():
    labels = np.array([[0, 2, 2], [2, 3, 3]], dtype=np.uint8)
    shares = pixel_shares(labels, 5)
    assert shares.dtype == np.float64 and shares.shape == (5,)
    assert shares.tolist() == [1 / 6, 0.0, 3 / 6, 2 / 6, 0.0]
    assert shares.sum() == 1.0


def test_pixel_shares_of_a_tensor_stay_float32():
    labels = torch.tensor([[0, 1, 1], [1, 1, 1]])
    shares = pixel_shares(labels, 3)
    assert shares.dtype == torch.float32 and shares.shape == (3,)
    assert shares.tolist() == [torch.tensor(1 / 6).item(), torch.tensor(5 / 6).item(), 0.0]
    # the same map as numpy gives the float64 fractions: the printed shares differ in the last digits
    assert float(shares[0]) != float(pixel_shares(labels.numpy(), 3)[0])
