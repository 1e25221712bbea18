"""Group → class decision of the original harness (GroupViT's ``encode_decode``), batched over crops.

For each crop: A = s·Gt·Tᵀ (G×N); P = softmax_N(A restricted to the image-level top-k classes) ⊙
softmax_N(A); with a background class a group is background when max_c P[g, c] < min(bg_thresh, max P).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GroupScores:
    """Per crop (K crops, G groups, N classes): raw (K, G, N) s-scaled affinities; pre (K, G, N) their
    softmax; image (K, N) softmax of the pooled embedding; topk (K, k) kept classes (best first);
    probs (K, G, N) the final group-class probabilities, exactly 0 outside the top-k."""

    raw: torch.Tensor
    pre: torch.Tensor
    image: torch.Tensor
    topk: torch.Tensor
    probs: torch.Tensor


def group_class_scores(group_emb: torch.Tensor, image_emb: torch.Tensor, text_emb: torch.Tensor,
                       scale: torch.Tensor, top_k: int = 5, always_keep: int | None = None) -> GroupScores:
    """group_emb (K, G, D) and image_emb (K, D) L2-normalised; text_emb (N, D) L2-normalised.
    ``always_keep``: a class index exempt from the top-k filter (a learned background class)."""
    raw = scale * group_emb @ text_emb.t()
    pre = raw.softmax(dim=-1)
    image = (scale * image_emb @ text_emb.t()).softmax(dim=-1)
    ranked = image
    if always_keep is not None:  # the kept class never takes one of the k places
        ranked = image.index_fill(-1, torch.tensor([always_keep], device=image.device), -1.0)
    topk = ranked.topk(min(top_k, text_emb.shape[0] - (always_keep is not None)), dim=-1).indices
    keep = torch.zeros_like(image, dtype=torch.bool).scatter_(-1, topk, True)
    if always_keep is not None:
        keep[..., always_keep] = True
    probs = raw.masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(dim=-1) * pre
    return GroupScores(raw=raw, pre=pre, image=image, topk=topk, probs=probs)


def background_flags(probs: torch.Tensor, bg_thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """probs (K, G, N) -> (flags (K, G) bool: the group is background, τ (K,) the threshold used)."""
    tau = probs.flatten(1).amax(dim=1).clamp(max=bg_thresh)
    return probs.amax(dim=-1) < tau.unsqueeze(1), tau


def crop_class_table(probs: torch.Tensor, bg_thresh: float | None) -> torch.Tensor:
    """(K, G, N) -> (K, G, C) per-group logits of every output class; C = N + 1 with background first
    (1.0 for background groups, else 0.0), C = N without background."""
    if bg_thresh is None:
        return probs
    flags, _ = background_flags(probs, bg_thresh)
    return torch.cat([flags.to(probs.dtype).unsqueeze(-1), probs], dim=-1)
