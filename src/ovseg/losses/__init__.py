"""Training losses: image–caption and entity InfoNCE, stage-2 cross-image mask consistency, and ovseg's
optional group-level entity losses."""

from .contrastive import contrastive_loss, gather_with_grad
from .group_entity import group_entity_loss, multi_label_loss, presence
from .mask import MaskLossResult, assignment_logits, mask_consistency_loss, start_mask_consistency_loss

__all__ = ["contrastive_loss", "gather_with_grad", "mask_consistency_loss", "assignment_logits", "MaskLossResult",
           "group_entity_loss", "multi_label_loss", "presence", "start_mask_consistency_loss"]
