"""ovseg's optional group-level losses (not in the original; off in the paper configs).

The original only aligns the *mean* of the segment tokens with the caption, so individual segments are
never asked to name anything. These losses use the same language supervision — the entity words of the
caption, as prompts "a photo of a {entity}." — at the level of segments:

* ``multi_label_loss``: GroupViT's multi-label prompt loss on the pooled embedding.
* ``group_entity_loss``: multiple-instance learning with a learned background embedding: every segment
  must be explained by one of its caption's entities or by background (never by an entity absent from the
  caption), every entity of the caption must be claimed by at least one segment, and each segment should
  commit to one class (low entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def presence(entities: list[list[str]], vocabulary: list[str], device: torch.device) -> torch.Tensor:
    """(B, K) bool: sample b mentions vocabulary entry k."""
    index = {name: k for k, name in enumerate(vocabulary)}
    mask = torch.zeros(len(entities), len(vocabulary), dtype=torch.bool)
    for b, names in enumerate(entities):
        for name in names:
            mask[b, index[name]] = True
    return mask.to(device)


def multi_label_loss(image_x: torch.Tensor, prompts: torch.Tensor, present: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """Soft-target InfoNCE both ways between images and entity prompts (K, D).

    ``image_x`` (B, D) pooled embeddings, or (B, G, D) segment embeddings: an image then scores each prompt
    by its best segment, so that the gradient reaches the segment that shows the entity, not all of them.
    """
    image_x, prompts = F.normalize(image_x, dim=-1), F.normalize(prompts, dim=-1)
    if image_x.dim() == 3:
        logits = scale * (image_x @ prompts.t()).amax(dim=1)  # (B, G, K) -> (B, K)
    else:
        logits = scale * image_x @ prompts.t()  # (B, K)
    target = present.float()
    has = target.sum(1) > 0
    i2t = -(target / target.sum(1, keepdim=True).clamp(min=1) * logits.log_softmax(1)).sum(1)[has].mean()
    t2i = -(target.t() / target.sum(0).unsqueeze(1).clamp(min=1) * logits.t().log_softmax(1)).sum(1).mean()
    return 0.5 * (i2t + t2i)


def group_entity_loss(groups: torch.Tensor, prompts: torch.Tensor, background: torch.Tensor, present: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """groups (B, G, D), prompts (K, D), background (D,), present (B, K) -> MIL loss (0-dim)."""
    classes = F.normalize(torch.cat([background.unsqueeze(0), prompts]), dim=-1)  # (1 + K, D)
    log_p = (scale * F.normalize(groups, dim=-1) @ classes.t()).log_softmax(-1)  # (B, G, 1 + K)
    allowed = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)  # background always allowed
    explained = log_p.masked_fill(~allowed.unsqueeze(1), float("-inf")).logsumexp(-1)  # (B, G)
    claimed = log_p[..., 1:].amax(dim=1)  # (B, K): best segment for each entity
    cover = -(claimed[present]).mean() if present.any() else log_p.new_zeros(())
    # each segment commits to one class: without this, every segment can spread its mass over all of the
    # caption's entities (global context), which satisfies both terms without localising anything
    entropy = -(log_p.exp() * log_p).sum(-1).mean()
    return -explained.mean() + cover + entropy
