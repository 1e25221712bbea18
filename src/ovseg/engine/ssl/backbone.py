"""The part of the quickstart's image encoder that self-supervised pretraining trains: the stem, the position
table and the blocks before the grouping, run over the patch tokens alone (no group tokens, no grouping).

Built from ``model.img_encoder`` with GroupViT's own modules, so the weights it exports carry the encoder's
names (``patch_embed.*``, ``pos_embed``, ``layers.0.blocks.*``) and initialise it as they are.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from ...model.vision import GroupViT, resize_pos_embed


def image_encoder(ie: DictConfig) -> GroupViT:
    """A freshly initialised GroupViT as ``model.img_encoder`` describes it (no pretrained start)."""
    return GroupViT(
        img_size=ie.img_size,
        patch_size=ie.patch_size,
        in_chans=ie.in_chans,
        embed_dim=ie.embed_dim,
        embed_factors=list(ie.embed_factors),
        depths=list(ie.depths),
        num_heads=list(ie.num_heads),
        num_group_tokens=list(ie.num_group_tokens),
        num_output_groups=list(ie.num_output_groups),
        mlp_ratio=ie.mlp_ratio,
        qkv_bias=ie.qkv_bias,
        drop_path_rate=ie.drop_path_rate,
        patch_norm=ie.patch_norm,
        stem=ie.stem,
        stem_extra_convs=ie.stem_extra_convs,
    )


class SslBackbone(nn.Module):
    """(B, 3, H, W) normalised images -> (B, h·w, C) patch tokens after the pre-grouping blocks. With ``mask``
    (B, h·w) bool, the masked patches' stem features are replaced by a learned mask token (iBOT)."""

    def __init__(self, ie: DictConfig):
        super().__init__()
        encoder = image_encoder(ie)
        self.patch_embed, self.pos_embed, self.blocks = encoder.patch_embed, encoder.pos_embed, encoder.layers[0].blocks
        self.base_grid = encoder.base_grid
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ie.embed_dim))  # only iBOT's masked views use it

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, grid = self.patch_embed(images)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + resize_pos_embed(self.pos_embed, self.base_grid, grid)
        for block in self.blocks:
            x = block(x)
        return x

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The tensors the init replaces, under the image encoder's names (BatchNorm statistics included)."""
        state = {f"patch_embed.{k}": v for k, v in self.patch_embed.state_dict().items()}
        state["pos_embed"] = self.pos_embed.detach()
        state.update({f"layers.0.blocks.{k}": v for k, v in self.blocks.state_dict().items()})
        return {
            k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu() for k, v in state.items()
        }
