"""Training losses: image–caption and entity InfoNCE, stage-2 cross-image mask consistency."""

from .contrastive import contrastive_loss, gather_with_grad
from .mask import MaskLossResult, assignment_logits, mask_consistency_loss

__all__ = ["contrastive_loss", "gather_with_grad", "mask_consistency_loss", "assignment_logits", "MaskLossResult"]
