"""GroupViT's grouping block: learnable group tokens bind image patches into segment tokens.

One step, one head, no iterations. The assignment logits L = q·kᵀ/√C (groups × patches) are normalised
over the *group* axis, so patches compete for groups. Training uses Gumbel noise and a straight-through
hard one-hot; evaluation uses the hard argmax for the features and the plain softmax for segment maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CrossAttnBlock, Mlp


@dataclass
class Assignment:
    """Patch-to-group assignment of one grouping block (heads = 1).

    soft: (B, 1, G, N) softmax over the G groups of the logits; sums to 1 over G for every patch.
    hard: (B, 1, G, N) the map actually used for the features (one-hot, straight-through in training).
    q: (B, 1, G, C) projected group queries; k: (B, 1, N, C) projected patch keys (stage-2 mask loss).
    patch_tokens: (B, N, out_dim), when asked: each patch's features as a one-patch segment (see
    ``GroupingBlock.forward``).
    """

    soft: torch.Tensor
    hard: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    patch_tokens: torch.Tensor | None = None


def straight_through_onehot(soft: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the argmax along ``dim`` in the forward pass, gradient of ``soft`` in the backward pass."""
    index = soft.argmax(dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return hard - soft.detach() + soft


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool, dim: int) -> torch.Tensor:
    """Softmax of (logits + Gumbel(0, 1) noise) / tau, optionally with a straight-through hard one-hot."""
    gumbels = -torch.empty_like(logits).exponential_().log()
    soft = ((logits + gumbels) / tau).softmax(dim)
    return straight_through_onehot(soft, dim) if hard else soft


class AssignAttention(nn.Module):
    """Single-head assignment of N patches to G groups, then a per-group average of the patch values
    with +1 smoothing: out_g = W_o Σ_n A_gn v_n / (Σ_n A_gn + 1)."""

    def __init__(self, dim: int, qkv_bias: bool = True, hard: bool = True, gumbel: bool = True,
                 gumbel_tau: float = 1.0, assign_eps: float = 1.0, center_keys: bool = False):
        super().__init__()
        self.scale = dim**-0.5
        self.center_keys = center_keys
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.hard, self.gumbel, self.gumbel_tau, self.assign_eps = hard, gumbel, gumbel_tau, assign_eps

    def _assign(self, logits: torch.Tensor) -> torch.Tensor:
        if self.gumbel and self.training:
            return gumbel_softmax(logits, self.gumbel_tau, self.hard, dim=-2)
        soft = logits.softmax(dim=-2)
        return straight_through_onehot(soft, dim=-2) if self.hard else soft

    def forward(self, groups: torch.Tensor, x: torch.Tensor, values: torch.Tensor | None = None,
                per_patch: bool = False) -> tuple[torch.Tensor, Assignment, torch.Tensor | None]:
        """groups (B, G, C), patches x (B, N, C) -> new group tokens (B, G, C), the assignment and, with
        ``per_patch``, (B, N, C) what each patch's group would become if all its patches were like this one.
        ``values``: other per-patch features (B, N, C) to average instead of x."""
        q = self.q_proj(groups).unsqueeze(1)  # (B, 1, G, C): one head
        k = self.k_proj(x).unsqueeze(1)
        if self.center_keys:  # drop the image-wide key component: it favours one group for every patch
            k = k - k.mean(dim=-2, keepdim=True)
        v = self.v_proj(x if values is None else values).unsqueeze(1)
        logits = (q @ k.transpose(-2, -1)) * self.scale  # (B, 1, G, N)
        hard = self._assign(logits)
        soft = logits.softmax(dim=-2)
        weights = hard / (hard.sum(dim=-1, keepdim=True) + self.assign_eps)
        out = self.proj((weights @ v).squeeze(1))
        patch_out = None
        if per_patch:  # the same average over a group of n identical patches: v·n/(n+1)
            counts = hard.sum(dim=-1, keepdim=True)  # (B, 1, G, 1)
            own = (hard * counts).sum(dim=-2).squeeze(1).unsqueeze(-1)  # (B, N, 1): size of each patch's group
            patch_out = self.proj(v.squeeze(1) * own / (own + self.assign_eps))
        return out, Assignment(soft=soft, hard=hard, q=q, k=k), patch_out


class GroupingBlock(nn.Module):
    """Merges N patch tokens into ``num_output_group`` segment tokens guided by ``num_group_token``
    learnable group tokens (GroupViT §3.1). Key names follow GroupViT's ``downsample`` module."""

    def __init__(self, dim: int, out_dim: int, num_heads: int, num_group_token: int, num_output_group: int,
                 mlp_ratio: tuple[float, float] = (0.5, 4.0), hard: bool = True, gumbel: bool = True,
                 gumbel_tau: float = 1.0, center_keys: bool = False, group_token_residual: bool = True):
        super().__init__()
        self.group_token_residual = group_token_residual
        tokens_dim, channels_dim = int(mlp_ratio[0] * dim), int(mlp_ratio[1] * dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.mlp_inter = Mlp(num_group_token, tokens_dim, num_output_group)  # over the token axis
        self.norm_post_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.pre_assign_attn = CrossAttnBlock(dim, num_heads, mlp_ratio=4.0, qkv_bias=True, post_norm=True)
        self.assign = AssignAttention(dim, qkv_bias=True, hard=hard, gumbel=gumbel, gumbel_tau=gumbel_tau,
                                      center_keys=center_keys)
        self.norm_new_x = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, channels_dim, out_dim)
        if out_dim != dim:
            self.reduction = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim, bias=False))
        else:
            self.reduction = nn.Identity()

    def forward(self, x: torch.Tensor, group_tokens: torch.Tensor, values: torch.Tensor | None = None,
                per_patch: bool = False) -> tuple[torch.Tensor, Assignment]:
        """x (B, N, C) patches, group_tokens (B, S, C) -> segment tokens (B, G, out_dim), assignment.
        ``values`` (B, N, C): what the segments average, if not x (ovseg's ``segment_values: stem``).
        ``per_patch``: also each patch as a one-patch segment of its own group, through the same output path
        (``assignment.patch_tokens``), for scoring every patch against the class names at inference."""
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        # token MLP over the group axis: (B, S, C) -> (B, G, C)
        projected = self.norm_post_tokens(self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2))
        projected = self.pre_assign_attn(projected, x)
        new_x, assignment, patch_x = self.assign(projected, x, None if values is None else self.norm_x(values),
                                                 per_patch)
        if self.group_token_residual:  # GroupViT; without it a segment's features come from its patches only
            new_x = new_x + projected
            if patch_x is not None:  # each patch gets its own group's token
                patch_x = patch_x + assignment.hard.squeeze(1).transpose(1, 2) @ projected
        if patch_x is not None:
            assignment.patch_tokens = self._output(patch_x)
        return self._output(new_x), assignment

    def _output(self, new_x: torch.Tensor) -> torch.Tensor:
        return self.reduction(new_x) + self.mlp_channels(self.norm_new_x(new_x))


def upsample_soft_maps(soft: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
                       align_corners: bool = False) -> torch.Tensor:
    """(B, 1, G, h·w) soft assignment -> (B, G, H, W) bilinearly resized maps."""
    b, _, g, _ = soft.shape
    maps = soft.reshape(b, g, *grid)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)
