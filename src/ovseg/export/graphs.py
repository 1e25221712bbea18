"""The two graphs that leave PyTorch: the image side of one window batch and the text side of a prompt batch.

Each is a small ``nn.Module`` over the model's own submodules, so that an export holds only the weights it
runs (no text weights in the image graph, no training-only parts: entity decoder, momentum encoder) and its
outputs are exactly what ``ovseg.inference`` reads of ``OVSegmentor.encode_image`` / ``encode_text``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import OVSegmentor

IMAGE_INPUTS = ("images",)
IMAGE_OUTPUTS = ("group_emb", "image_emb", "soft_assign")
PATCH_OUTPUT = "patch_emb"  # added when the harness scores every patch (evaluate.seg.scoring: patches)
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("prompt_emb", "prompt_emb_normalized")


class WindowEncoder(nn.Module):
    """images (B, 3, H, W) float32, normalised windows -> group_emb (B, G, D) and image_emb (B, D), projected
    and L2-normalised as the segmentation head scores them; soft_assign (B, G, h, w), the last grouping
    block's soft assignment (softmax over the G groups) on the (h, w) patch grid of the window; with
    ``per_patch``, patch_emb (B, h·w, D) L2-normalised, each patch as a one-patch segment of its group."""

    def __init__(self, model: OVSegmentor, per_patch: bool = False):
        super().__init__()
        self.img_encoder = model.img_encoder
        self.img_projector = model.img_projector
        self.per_patch = per_patch

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.img_encoder(images, per_patch=self.per_patch)  # as OVSegmentor.encode_image
        soft = out.assignments[-1].soft
        batch, _, groups, _ = soft.shape
        outputs = (
            F.normalize(self.img_projector(out.tokens), dim=-1),
            F.normalize(self.img_projector(out.pooled), dim=-1),
            soft.reshape(batch, groups, *out.grid),
        )
        if self.per_patch:
            outputs += (F.normalize(self.img_projector(out.patch_tokens), dim=-1),)
        return outputs


class PromptEncoder(nn.Module):
    """input_ids, attention_mask (B, L) int64 -> prompt_emb (B, D), each prompt's projected embedding, and
    prompt_emb_normalized, the same L2-normalised. A class embedding is the L2-normalised mean of its
    prompts' ``prompt_emb`` (templates × synonyms, ``embed_class_names``); with one prompt per class it is
    that prompt's ``prompt_emb_normalized``."""

    def __init__(self, model: OVSegmentor):
        super().__init__()
        self.text_encoder = model.text_encoder
        self.text_projector = model.text_projector

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, _ = self.text_encoder(input_ids, attention_mask)  # as OVSegmentor.encode_text
        prompt = self.text_projector(pooled)
        return prompt, F.normalize(prompt, dim=-1)


def image_output_names(per_patch: bool) -> tuple[str, ...]:
    return IMAGE_OUTPUTS + ((PATCH_OUTPUT,) if per_patch else ())
