"""The confusion-matrix mIoU against hand-computed values and an independent (mmseg 0.18 style) computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ovseg.evaluation import ConfusionMatrix


def mmseg_total_areas(preds, labels, num_classes, ignore_index=255):
    """mmseg 0.18 ``intersect_and_union`` per image with ``torch.histc``, summed over images."""
    totals = [torch.zeros(num_classes, dtype=torch.float64) for _ in range(4)]
    for pred, label in zip(preds, labels, strict=True):
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        intersect = pred[pred == label]
        hist = [torch.histc(x.double(), bins=num_classes, min=0, max=num_classes - 1)
                for x in (intersect, pred, label)]
        union = hist[1] + hist[2] - hist[0]
        for total, value in zip(totals, (hist[0], union, hist[1], hist[2]), strict=True):
            total += value
    return totals  # intersect, union, pred, label


def test_hand_computed_two_images():
    # image A: 4x4, 4 ignored pixels; image B: all background, one pixel predicted as class 2
    gt_a = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 3, 3], [255, 255, 3, 3]])
    pr_a = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [3, 3, 3, 0], [0, 0, 3, 3]])
    gt_b = torch.zeros(4, 4, dtype=torch.long)
    pr_b = torch.zeros(4, 4, dtype=torch.long)
    pr_b[1, 2] = 2
    cm = ConfusionMatrix(4)
    cm.update(pr_a, gt_a)
    cm.update(pr_b, gt_b)
    s = cm.scores()
    # class 0: gt 4+16, pred 4+15, inter 3+15 -> 18/21; class 1: 4/5; class 2: 0/1; class 3: 3/4
    assert s.iou == pytest.approx([18 / 21, 4 / 5, 0.0, 3 / 4])
    assert s.miou == pytest.approx((18 / 21 + 4 / 5 + 0 + 3 / 4) / 4)
    assert s.aacc == pytest.approx((18 + 4 + 3) / 28)
    assert math.isnan(s.acc[2]) and s.acc[3] == pytest.approx(3 / 4)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    s = cm.scores()
    assert math.isnan(s.iou[2])
    assert s.miou == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_matches_mmseg_histc_on_random_maps_with_ignore_and_out_of_range():
    gen = torch.Generator().manual_seed(0)
    c = 21
    preds, labels = [], []
    for h, w in [(17, 23), (40, 9), (31, 31)]:
        preds.append(torch.randint(0, c, (h, w), generator=gen))
        label = torch.randint(0, c, (h, w), generator=gen)
        label[torch.rand(h, w, generator=gen) < 0.1] = 255
        label[torch.rand(h, w, generator=gen) < 0.05] = 40  # out of range: histc drops it from the labels
        labels.append(label)
    cm = ConfusionMatrix(c)
    for p, g in zip(preds, labels, strict=True):
        cm.update(p, g)
    inter, union, pred, label = mmseg_total_areas(preds, labels, c)
    s = cm.scores("mmseg")
    np.testing.assert_allclose(s.iou, (inter / union).numpy())
    np.testing.assert_allclose(s.acc, (inter / label).numpy())
    assert s.aacc == pytest.approx(float(inter.sum() / label.sum()))
    assert cm.invalid_pixels() == sum(int((g == 40).sum()) for g in labels)
    assert int(cm.mat[:c].sum(0).sum() + cm.mat[c].sum()) == int(pred.sum())


def test_out_of_range_policies_by_hand():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 30], [1, 1]]))
    # mmseg: the prediction on the out-of-range pixel counts for class 1 -> 2 / 3
    assert cm.scores("mmseg").miou == pytest.approx((1 + 2 / 3) / 2)
    assert cm.scores("ignore").miou == pytest.approx(1.0)
    assert cm.invalid_pixels() == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix(3).update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="predictions"):
        ConfusionMatrix(3).update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError):
        ConfusionMatrix(3).scores("drop")


def test_merge_equals_one_matrix():
    a, b, both = ConfusionMatrix(3), ConfusionMatrix(3), ConfusionMatrix(3)
    x, y = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 255, 7])
    a.update(x, y)
    b.update(y.clamp(max=2), x)
    both.update(x, y)
    both.update(y.clamp(max=2), x)
    a.merge(b)
    assert torch.equal(a.mat, both.mat) and a.invalid_pixels() == 1
