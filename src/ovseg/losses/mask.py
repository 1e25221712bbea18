"""Stage-2 cross-image mask consistency (OVSegmentor §3.3).

The anchor image's online group queries are applied to a partner image's momentum patch keys; the result
must match the partner's own (momentum) group maps after Hungarian matching. Targets are sigmoid maps
binarised at ``threshold``·max; predictions are min-max normalised; Dice over all G masks of a sample,
summed over the batch and divided by G (the original's normalisation, not a batch mean). Only the groups
closest to the shared entity's text embedding receive gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass
class MaskLossResult:
    """value: the loss (0-dim); gated: (B, G − k) detached group indices; match: (B, G) target order."""

    value: torch.Tensor
    gated: torch.Tensor
    match: torch.Tensor


def assignment_logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Group queries (B, 1, G, C) on patch keys (B, 1, N, C) -> (B, G, N) logits q·kᵀ/√C."""
    return (q @ k.transpose(-2, -1)).squeeze(1) * q.shape[-1] ** -0.5


def upsample_maps(maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(B, G, h·w) -> (B, G, H·W), bilinear with align_corners=True as the original."""
    b, g, _ = maps.shape
    up = F.interpolate(maps.reshape(b, g, *grid), size=size, mode="bilinear", align_corners=True)
    return up.flatten(2)


def gate_groups(pred: torch.Tensor, groups: torch.Tensor, entity: torch.Tensor, keep_ratio: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Detach the rows of ``pred`` (B, G, P) whose groups (B, G, D) score lowest against ``entity`` (B, D)
    (raw dot products); int(G·keep_ratio) groups are detached. Returns (gated pred, detached indices)."""
    with torch.no_grad():
        relevance = (groups @ entity.unsqueeze(-1)).squeeze(-1)  # (B, G)
        num_off = int(groups.shape[1] * keep_ratio)
        off = relevance.topk(num_off, dim=1, largest=False).indices
        detach = torch.zeros_like(relevance, dtype=torch.bool).scatter_(1, off, True)
    return torch.where(detach.unsqueeze(-1), pred.detach(), pred), off


@dataclass
class PendingMatch:
    """A Hungarian matching under way: its cost matrices travel to the host while the device keeps working.

    On CUDA the copy goes to pinned memory behind an event, so the host waits only for the cost matrices,
    not for the work queued after them (the step's other losses): scipy then runs while the GPU computes.
    """

    cost: torch.Tensor  # (B, G, G) on the host; complete once ``ready`` has fired
    ready: torch.cuda.Event | None
    device: torch.device

    def result(self) -> torch.Tensor:
        """(B, G) permutations, int64 on the device of the masks."""
        if self.ready is not None:
            self.ready.synchronize()
        perms = np.stack([linear_sum_assignment(c)[1] for c in self.cost.numpy()])
        return torch.from_numpy(perms).to(self.device, non_blocking=True)


@torch.no_grad()
def start_hungarian_match(pred: torch.Tensor, target: torch.Tensor) -> PendingMatch:
    """Cost matrices Σ L2(normalised pred_i, normalised target_j) of (B, G, P) masks, sent to the host."""
    cost = torch.cdist(F.normalize(pred.float(), dim=-1), F.normalize(target.float(), dim=-1))
    if cost.device.type != "cuda":
        return PendingMatch(cost.cpu(), None, pred.device)
    host = torch.empty(cost.shape, dtype=cost.dtype, pin_memory=True)
    host.copy_(cost, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return PendingMatch(host, ready, pred.device)


def hungarian_match(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """For each sample, the target order minimising Σ L2(normalised pred_i, normalised target_σ(i)).
    pred/target (B, G, P) -> (B, G) permutation σ (int64, on pred's device)."""
    return start_hungarian_match(pred, target).result()


def dice_loss(pred: torch.Tensor, target: torch.Tensor, num_masks: int) -> torch.Tensor:
    """Σ_b [1 − (2ΣPT + 1)/(ΣP + ΣT + 1)] / num_masks over (B, G, P), each sample's masks jointly."""
    pred, target = pred.flatten(1), target.flatten(1)
    dice = 1 - (2 * (pred * target).sum(1) + 1) / (pred.sum(1) + target.sum(1) + 1)
    return dice.sum() / num_masks


@dataclass
class PendingMaskLoss:
    """The mask loss up to its Hungarian matching (``start_mask_consistency_loss``); ``finish`` completes it."""

    pred: torch.Tensor
    target: torch.Tensor
    gated: torch.Tensor
    match: PendingMatch
    threshold: float

    def finish(self) -> MaskLossResult:
        match = self.match.result()
        target = torch.gather(self.target, 1, match.unsqueeze(-1).expand_as(self.target)).sigmoid()
        target = (target >= self.threshold * target.amax(dim=-1, keepdim=True)).to(self.pred.dtype)
        low, high = self.pred.amin(dim=-1, keepdim=True), self.pred.amax(dim=-1, keepdim=True)
        pred = (self.pred - low) / (high - low)
        return MaskLossResult(value=dice_loss(pred, target, pred.shape[1]), gated=self.gated, match=match)


def start_mask_consistency_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor,
                                entity: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
                                threshold: float = 0.6, group_ratio: float = 0.5) -> PendingMaskLoss:
    """``mask_consistency_loss`` in two halves, so that a training step can queue more work on the device
    while the matching's cost matrices reach the host (see ``PendingMatch``)."""
    pred = upsample_maps(pred, grid, size)
    target = upsample_maps(target.detach(), grid, size)
    pred, gated = gate_groups(pred, groups, entity, group_ratio)
    return PendingMaskLoss(pred, target, gated, start_hungarian_match(pred, target), threshold)


def mask_consistency_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, entity: torch.Tensor,
                          grid: tuple[int, int], size: tuple[int, int], threshold: float = 0.6,
                          group_ratio: float = 0.5) -> MaskLossResult:
    """pred (B, G, h·w) anchor queries on partner keys; target (B, G, h·w) partner's own momentum maps;
    groups (B, G, D) anchor group embeddings; entity (B, D) text embedding of the shared entity."""
    return start_mask_consistency_loss(pred, target, groups, entity, grid, size, threshold, group_ratio).finish()
