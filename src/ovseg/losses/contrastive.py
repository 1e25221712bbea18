"""Symmetric InfoNCE with negatives from every rank (image–caption and entity completion losses)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..ranks import rank, world_size


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; gradients flow back to each rank's slice.
    One process: ``x`` itself."""
    if world_size() == 1:
        return x
    try:  # torch's functional collectives (differentiable: the backward sums the ranks' gradients)
        from torch.distributed._functional_collectives import all_gather_single
    except ImportError:  # older torch
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(x), dim=0)
    return all_gather_single(x.contiguous(), 0, dist.group.WORLD)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """½ [CE(s·â·B̂ᵀ, own index) + CE(s·b̂·Âᵀ, own index)] with Â, B̂ gathered over ranks.

    a, b: (B, D) paired embeddings (normalised here); scale: the clamped logit scale s (0-dim).
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    labels = torch.arange(a.shape[0], device=a.device) + a.shape[0] * rank()
    loss_a = F.cross_entropy(scale * a @ gather_with_grad(b).t(), labels)
    loss_b = F.cross_entropy(scale * b @ gather_with_grad(a).t(), labels)
    return 0.5 * (loss_a + loss_b)
