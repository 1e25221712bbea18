"""Each loss against a small case computed by hand; gradients flow only where the spec says."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovseg.losses import contrastive_loss, group_entity_loss, mask_consistency_loss, multi_label_loss
from ovseg.losses.mask import dice_loss, hungarian_match


def test_contrastive_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised inside: (1, 0) and (0.707, 0.707)
    s = torch.tensor(2.0)
    c = 1 / math.sqrt(2)
    # a->b logits: [[2, 2c], [0, 2c]]; b->a logits: [[2, 0], [2c, 2c]]
    ce = lambda row, k: -(row[k] - math.log(sum(math.exp(v) for v in row)))  # noqa: E731
    expected = 0.5 * ((ce([2, 2 * c], 0) + ce([0, 2 * c], 1)) / 2 + (ce([2, 0], 0) + ce([2 * c, 2 * c], 1)) / 2)
    assert contrastive_loss(a, b, s).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_by_hand():
    pred = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # one sample, two masks of two pixels
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # joint over masks: sum(P*T) = 1 + 0.5 = 1.5, sum P = 2, sum T = 2 -> 1 - (3 + 1) / (4 + 1) = 0.2
    assert dice_loss(pred, target, num_masks=2).item() == pytest.approx(0.2 / 2)


def test_hungarian_match_finds_the_permutation():
    target = torch.eye(4).unsqueeze(0) + 0.01
    perm = torch.tensor([2, 0, 3, 1])
    pred = target[:, perm]
    assert hungarian_match(pred, target).tolist() == [perm.tolist()]


def test_mask_loss_reaches_only_the_groups_closest_to_the_entity():
    torch.manual_seed(0)
    pred = torch.randn(2, 4, 16, requires_grad=True)
    target = torch.randn(2, 4, 16)
    groups = torch.randn(2, 4, 8)
    entity = torch.randn(2, 8)
    result = mask_consistency_loss(pred, target, groups, entity, (4, 4), (8, 8), 0.6, 0.5)
    result.value.backward()
    relevance = (groups @ entity.unsqueeze(-1)).squeeze(-1)
    lowest = relevance.argsort(dim=1)[:, :2]
    for b in range(2):
        for g in range(4):
            has_grad = pred.grad[b, g].abs().sum() > 0
            assert has_grad == (g not in lowest[b].tolist())
    assert sorted(result.gated[0].tolist()) == sorted(lowest[0].tolist())


def test_mask_loss_is_zero_for_a_perfect_binary_prediction():
    target_maps = torch.full((1, 2, 4), -20.0)
    target_maps[0, 0, :2] = 20.0
    target_maps[0, 1, 2:] = 20.0
    pred = torch.zeros(1, 2, 4)
    pred[0, 1, :2] = 1.0  # group 1 predicts target mask 0, group 0 predicts mask 1: matching swaps them
    pred[0, 0, 2:] = 1.0
    result = mask_consistency_loss(pred, target_maps, torch.ones(1, 2, 3), torch.ones(1, 3), (2, 2), (2, 2))
    assert result.match.tolist() == [[1, 0]]
    # dice = 1 - (2*4 + 1) / (4 + 4 + 1) = 0
    assert result.value.item() == pytest.approx(0.0, abs=1e-6)


def test_multi_label_loss_prefers_the_right_entities():
    prompts = torch.eye(3)
    present = torch.tensor([[True, False, False], [False, True, True]])
    good = torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]])
    bad = torch.tensor([[0, 0, 1.0], [1.0, 0, 0]])
    s = torch.tensor(10.0)
    assert multi_label_loss(good, prompts, present, s) < multi_label_loss(bad, prompts, present, s)


def test_group_entity_loss_by_hand():
    prompts = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # entity 0, entity 1
    background = torch.tensor([-1.0, 0.0])
    groups = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])  # group 0 = entity 0, group 1 = background
    present = torch.tensor([[True, False]])
    s = torch.tensor(1.0)
    log_p = F.log_softmax(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]]), dim=-1)  # classes: bg, e0, e1
    explained = torch.stack([log_p[0, :2].logsumexp(0), log_p[1, :2].logsumexp(0)])
    entropy = -(log_p.exp() * log_p).sum(-1).mean()
    expected = -explained.mean() - torch.max(log_p[:, 1]) + entropy
    assert group_entity_loss(groups, prompts, background, present, s).item() == pytest.approx(expected.item())


def test_multi_label_loss_on_segments_scores_each_prompt_by_its_best_segment():
    # image 0 shows entity 0 (segment 0) and image 1 entity 1; segment 2 of each image is never the best
    segments = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]],
                             [[0.0, 1.0], [0.8, 0.6], [0.0, -1.0]]], requires_grad=True)
    present = torch.tensor([[True, False], [False, True]])
    s = torch.tensor(10.0)
    loss = multi_label_loss(segments, torch.eye(2), present, s)
    # logits s·[[1, 0.8], [0.8, 1]] in both directions: -log softmax([10, 8])[0]
    expected = -torch.log_softmax(torch.tensor([10.0, 8.0]), 0)[0]
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    loss.backward()
    assert segments.grad[:, 2].abs().sum() == 0 and segments.grad[:, :2].abs().sum() > 0
