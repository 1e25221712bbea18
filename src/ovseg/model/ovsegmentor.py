"""OVSegmentor: GroupViT image encoder + transformers text encoder in one 256-d space.

The model only encodes; losses live in ``ovseg.losses`` and inference in ``ovseg.inference``. Outputs are
typed and the same in training and evaluation (only the grouping's Gumbel noise depends on the mode).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ..errors import ConfigError
from .entity_decoder import EntityDecoder
from .grouping import AssignAttention, Assignment
from .heads import ProjectMLP
from .text import TextEncoder, build_hf_model
from .vision import GroupViT, clip_proj_width


@dataclass
class ImageOutput:
    """image_x (B, D) pooled embedding; image_feat (B, G, D) one per segment; the ``*_before_proj``
    are the encoder's (B, C) / (B, G, C) tokens; assignments and grid as in ``VisionOutput``; patch_feat
    (B, h·w, D) every patch as a one-patch segment, when asked."""

    image_x: torch.Tensor
    image_feat: torch.Tensor
    image_x_before_proj: torch.Tensor
    image_feat_before_proj: torch.Tensor
    assignments: list[Assignment]
    grid: tuple[int, int]
    patch_feat: torch.Tensor | None = None


@dataclass
class TextOutput:
    """text_x (B, D) projected pooled embedding; text_x_before_proj (B, W); tokens (B, L, W) last layer."""

    text_x: torch.Tensor
    text_x_before_proj: torch.Tensor
    tokens: torch.Tensor


@dataclass(frozen=True)
class HubIO:
    """The file side of ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub``: it lives in
    ``ovseg.checkpoints.hub`` (a file becomes a model only there, and ``model`` may not import it), which
    registers it on ``OVSegmentor.hub_io`` when imported; ``import ovseg`` always imports it."""

    load: Callable[..., Any]
    save: Callable[..., Path]
    push: Callable[..., Any]


class OVSegmentor(nn.Module):
    """Submodule names mirror the official ``MultiLabelContrastive`` state dict."""

    hub_io: ClassVar[HubIO | None] = None

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        ie, te = cfg.img_encoder, cfg.text_encoder
        try:
            self.img_encoder = GroupViT(
                img_size=ie.img_size, patch_size=ie.patch_size, in_chans=ie.in_chans, embed_dim=ie.embed_dim,
                embed_factors=list(ie.embed_factors), depths=list(ie.depths), num_heads=list(ie.num_heads),
                num_group_tokens=list(ie.num_group_tokens), num_output_groups=list(ie.num_output_groups),
                hard_assignment=ie.hard_assignment, gumbel_tau=ie.gumbel_tau, mlp_ratio=ie.mlp_ratio,
                qkv_bias=ie.qkv_bias, drop_rate=ie.drop_rate, attn_drop_rate=ie.attn_drop_rate,
                drop_path_rate=ie.drop_path_rate, patch_norm=ie.patch_norm, stem=ie.stem,
                center_assign_keys=ie.center_assign_keys, group_token_residual=ie.group_token_residual,
                segment_values=ie.segment_values, stem_extra_convs=ie.stem_extra_convs,
                out_proj_dim=clip_proj_width(ie))
        except ValueError as e:  # a user's setting: one line naming it, not a traceback
            raise ConfigError(f"model.img_encoder: {e}") from e
        if cfg.patch_label_weight > 0 and not self.img_encoder.supports_patch_tokens:
            raise ConfigError("model.patch_label_weight needs one grouping block and no block after it "
                              f"(model.img_encoder.depths [d, 0]), got depths {list(ie.depths)}")
        transformer = build_hf_model(te.name, te.pretrained, dict(te.hf_overrides), te.attn_implementation)
        self.text_encoder = TextEncoder(transformer, te.pooling, te.center_features)
        img_width, text_width = self.img_encoder.out_features, self.text_encoder.width
        proj = dict(inner_dim=cfg.proj_inner_dim, out_dim=cfg.output_dim, num_layers=cfg.proj_num_layers)
        self.img_projector = ProjectMLP(img_width, **proj)
        self.text_projector = ProjectMLP(text_width, **proj)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.contrast_temperature)))
        if cfg.use_entityloss:
            ed = cfg.entity_decoder
            self.multimodal_groupingblock = EntityDecoder(img_width, text_width, ed.cross_layers, ed.num_heads,
                                                          ed.mask_padding)
            self.bridge_projector = ProjectMLP(self.multimodal_groupingblock.width, **proj)
        if cfg.learned_background:
            self.background_embedding = nn.Parameter(torch.randn(cfg.output_dim) * 0.02)
        if cfg.use_maskloss:
            self.img_encoder_momentum = copy.deepcopy(self.img_encoder).requires_grad_(False)
        self.set_frozen(ie.fixed, te.fixed)

    def set_frozen(self, image: bool, text: bool) -> None:
        """Freeze the image and/or text backbone (stage 2 freezes the text encoder, not its projector).

        A frozen backbone also stays in eval mode (no dropout), so that its features are a fixed function
        of the input and can be cached; the original left dropout on in its frozen BERT.
        """
        self._frozen = (image, text)
        self.img_encoder.requires_grad_(not image)
        self.text_encoder.requires_grad_(not text)
        pooler = getattr(self.text_encoder.transformer, "pooler", None)
        if pooler is not None:  # kept for the checkpoint format, never used (pooling reads the hidden states);
            pooler.requires_grad_(False)  # frozen so that DDP needs no search for unused parameters
        self.train(self.training)

    def train(self, mode: bool = True) -> OVSegmentor:
        super().train(mode)
        frozen_image, frozen_text = getattr(self, "_frozen", (False, False))
        if frozen_image:
            self.img_encoder.eval()
        if frozen_text:
            self.text_encoder.eval()
        return self

    def image_encoders(self) -> list[GroupViT]:
        """The online image encoder and, in stage 2, its momentum copy."""
        momentum = getattr(self, "img_encoder_momentum", None)
        return [self.img_encoder] + ([momentum] if momentum is not None else [])

    def set_hard_assignment(self, hard: bool) -> None:
        """Switch every grouping (the momentum encoder's too) between Gumbel hard assignment (the paper)
        and plain soft assignment (``train.soft_assignment_fraction``'s warm-up). A model configured soft
        (``img_encoder.hard_assignment: false``) stays soft."""
        hard = hard and self.cfg.img_encoder.hard_assignment
        for module in self.modules():
            if isinstance(module, AssignAttention):
                module.hard = module.gumbel = hard

    @property
    def num_groups(self) -> int:
        return self.cfg.img_encoder.num_output_groups[-1]

    def scale(self) -> torch.Tensor:
        """The shared logit scale exp(logit_scale), clamped at ``logit_scale_max`` (100)."""
        return self.logit_scale.exp().clamp(max=self.cfg.logit_scale_max)

    def encode_image(self, images: torch.Tensor, momentum: bool = False, per_patch: bool = False) -> ImageOutput:
        """images (B, 3, H, W) normalised RGB -> ImageOutput; ``momentum`` uses the EMA encoder;
        ``per_patch`` adds ``patch_feat`` (see ``GroupViT.forward``)."""
        encoder = self.img_encoder_momentum if momentum else self.img_encoder
        out = encoder(images, per_patch=per_patch)
        patches = self.img_projector(out.patch_tokens) if per_patch else None
        return ImageOutput(image_x=self.img_projector(out.pooled), image_feat=self.img_projector(out.tokens),
                           image_x_before_proj=out.pooled, image_feat_before_proj=out.tokens,
                           assignments=out.assignments, grid=out.grid, patch_feat=patches)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextOutput:
        """input_ids/attention_mask (B, L) -> TextOutput."""
        pooled, tokens = self.text_encoder(input_ids, attention_mask)
        return TextOutput(text_x=self.text_projector(pooled), text_x_before_proj=pooled, tokens=tokens)

    def decode_entity(self, image_tokens: torch.Tensor, question_tokens: torch.Tensor,
                      question_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment tokens (B, G, C) + masked-caption tokens (B, L, W) -> (decoded tokens (B, L, W'),
        bridge embedding (B, D) of the [CLS] position)."""
        decoded = self.multimodal_groupingblock(image_tokens, question_tokens, question_mask)
        return decoded, self.bridge_projector(decoded[:, 0])

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """θ_m ← m·θ_m + (1 − m)·θ over the image encoder's parameters (not buffers)."""
        m = self.cfg.momentum if momentum is None else momentum
        online = list(self.img_encoder.parameters())
        ema = list(self.img_encoder_momentum.parameters())
        torch._foreach_mul_(ema, m)
        torch._foreach_add_(ema, online, alpha=1.0 - m)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, device: str | torch.device = "cpu",
                        revision: str | None = None, opts: list[str] | None = None) -> OVSegmentor:
        """The model of a Hub-style folder (``save_pretrained``), an ovseg ``.safetensors`` or official ``.pth``
        file, or a Hugging Face Hub repo id (downloaded only when no such local path exists), in eval mode.
        Every file passes the checkpoint trust rules; ``opts`` (``model.…=value``) override its config."""
        return _hub_io().load(path_or_repo_id, device=device, revision=revision, opts=opts)

    def save_pretrained(self, save_directory: str | Path, preset: str | None = None, trained_on: str | None = None,
                        evaluation: Mapping[str, float] | None = None) -> Path:
        """Write ``model.safetensors``, ``config.json`` (the resolved config) and a model card ``README.md``;
        ``preset``, ``trained_on`` and ``evaluation`` ({benchmark: mIoU in %}) go into the card."""
        return _hub_io().save(self, save_directory, preset=preset, trained_on=trained_on, evaluation=evaluation)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload ovseg model", preset: str | None = None,
                    trained_on: str | None = None, evaluation: Mapping[str, float] | None = None) -> Any:
        """``save_pretrained`` into a temporary folder and upload it to the Hub repo ``repo_id`` (created if
        missing) as one commit; returns huggingface_hub's ``CommitInfo``."""
        return _hub_io().push(self, repo_id, private=private, token=token, commit_message=commit_message,
                              preset=preset, trained_on=trained_on, evaluation=evaluation)


def _hub_io() -> HubIO:
    if OVSegmentor.hub_io is None:
        raise RuntimeError("OVSegmentor's Hub methods need ovseg.checkpoints (import ovseg registers it)")
    return OVSegmentor.hub_io


def class_embeddings(text_x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N·T, D) projected prompt embeddings, class-major -> (N, D): mean over T templates, L2-normalised."""
    return F.normalize(text_x.reshape(num_classes, -1, text_x.shape[-1]).mean(dim=1), dim=-1)
