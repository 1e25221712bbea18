"""OVSegmentor's entity decoder ("multimodal grouping network") for masked entity completion.

The masked caption's tokens attend to the image's segment tokens (post-norm cross-attention), then to
each other (pre-norm ViT block whose output is added to its input once more), then a final LayerNorm.
The [CLS] position is what the bridge projector maps into the joint space. Faithful default: padding
tokens take part in the self-attention (the original ignores the mask); ``mask_padding`` fixes that.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import AttnBlock, CrossAttnBlock


class MultimodalGroupingBlock(nn.Module):
    """text (B, L, W) queries, visual (B, G, W) keys -> text (B, L, W)."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.norm_tokens = nn.LayerNorm(width)
        self.norm_x = nn.LayerNorm(width)
        self.pre_assign_attn = CrossAttnBlock(width, num_heads, mlp_ratio=4.0, qkv_bias=True, post_norm=True)
        self.post_attn = AttnBlock(width, num_heads, mlp_ratio=4.0, qkv_bias=True)
        self.norm_new_x = nn.LayerNorm(width)

    def forward(self, text: torch.Tensor, visual: torch.Tensor,
                self_attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        t = self.pre_assign_attn(self.norm_tokens(text), self.norm_x(visual))
        return self.norm_new_x(self.post_attn(t, attn_mask=self_attn_mask) + t)


class EntityDecoder(nn.Module):
    """``cross_layers`` blocks; inputs are first mapped to width min(d_img, d_txt) when they differ."""

    def __init__(self, img_width: int, text_width: int, cross_layers: int = 1, num_heads: int = 8,
                 mask_padding: bool = False):
        super().__init__()
        width = min(img_width, text_width)
        self.align_proj_img = nn.Linear(img_width, width) if img_width != width else nn.Identity()
        self.align_proj_text = nn.Linear(text_width, width) if text_width != width else nn.Identity()
        self.blocks = nn.ModuleList(MultimodalGroupingBlock(width, num_heads) for _ in range(cross_layers))
        self.mask_padding = mask_padding
        self.width = width

    def forward(self, visual: torch.Tensor, question_tokens: torch.Tensor,
                question_mask: torch.Tensor | None = None) -> torch.Tensor:
        """visual (B, G, C_img) segment tokens, question_tokens (B, L, C_txt) -> decoded tokens (B, L, W)."""
        visual, text = self.align_proj_img(visual), self.align_proj_text(question_tokens)
        attn_mask = None
        if self.mask_padding and question_mask is not None:
            attn_mask = question_mask.bool()[:, None, None, :]  # (B, 1, 1, L): keys that may be attended
        for block in self.blocks:
            text = block(text, visual, attn_mask)
        return text
