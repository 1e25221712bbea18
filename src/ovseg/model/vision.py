"""GroupViT image encoder as OVSegmentor configures it: a ViT split into grouping stages.

Stage 0 runs ``depths[0]`` blocks over [patches ; group tokens], then a grouping block merges the
patches into ``num_output_groups[0]`` segment tokens; later stages run over segment tokens only. No CLS
token. The learned position table is stored 2-D, (num_patches, C), as in the released checkpoint.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SegmentValues, Stem
from .grouping import Assignment, GroupingBlock
from .layers import AttnBlock, Mlp


@dataclass
class VisionOutput:
    """tokens: (B, G, C) segment tokens after the final LayerNorm; pooled: (B, C) their mean;
    assignments: one per grouping block; grid: the (h, w) patch grid of the input; patch_tokens:
    (B, h·w, C) each patch as a one-patch segment of its group, after the final LayerNorm, when asked."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    assignments: list[Assignment]
    grid: tuple[int, int]
    patch_tokens: torch.Tensor | None = None


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution (or the given ``proj`` of the same stride); sizes
    that are not multiples of the patch floor."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm: bool, proj: nn.Module | None = None):
        super().__init__()
        if proj is None:
            proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.proj = proj
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


def conv_stem(patch_size: int, in_chans: int, embed_dim: int, norm: bool, extra_convs: int = 0) -> PatchEmbed:
    """Patches by stride-2 convolutions (3×3, BatchNorm, GELU) up to the patch stride, then a 1×1
    projection: early convolutions make a from-scratch ViT learn from far fewer samples (Xiao et al., 2021),
    which the CPU quickstart needs. Still one token per patch."""
    stages = int(math.log2(patch_size))
    if 2**stages != patch_size or stages < 1:
        raise ValueError(f"stem 'conv' needs a power-of-two patch_size, got {patch_size}")
    layers, width = [], in_chans
    for i in range(stages):
        out = max(embed_dim >> (stages - 1 - i), 16)
        layers += [nn.Conv2d(width, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.GELU()]
        width = out
    for _ in range(extra_convs):  # stride-1 3x3 at the patch grid: a wider receptive field per patch
        layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.GELU()]
    layers.append(nn.Conv2d(width, embed_dim, 1))
    return PatchEmbed(patch_size, in_chans, embed_dim, norm, proj=nn.Sequential(*layers))


STEMS = get_args(Stem)
CLIP_OUTPUT_WIDTHS = {768: 512, 1024: 768}  # OpenAI CLIP's visual width -> its embedding width


class MixerMlp(Mlp):
    """An MLP over the token axis of (B, N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class GroupingLayer(nn.Module):
    """One stage: optional group tokens joined to the input, ``depth`` blocks, optional grouping block."""

    def __init__(self, dim: int, depth: int, num_heads: int, num_group_token: int, mlp_ratio: float,
                 qkv_bias: bool, drop: float, attn_drop: float, drop_path: list[float],
                 downsample: GroupingBlock | None, group_projector: nn.Module | None):
        super().__init__()
        self.num_group_token = num_group_token
        if num_group_token > 0:
            self.group_token = nn.Parameter(torch.zeros(1, num_group_token, dim))
            if group_projector is None:
                nn.init.trunc_normal_(self.group_token, std=0.02)
        self.blocks = nn.ModuleList(
            AttnBlock(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path[i]) for i in range(depth)
        )
        self.downsample = downsample
        self.group_projector = group_projector

    def forward(self, x: torch.Tensor, prev_group_token: torch.Tensor | None, values: torch.Tensor | None = None,
                per_patch: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, Assignment | None]:
        group_token = None
        if self.num_group_token > 0:
            group_token = self.group_token.expand(x.shape[0], -1, -1)
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
            x = torch.cat([x, group_token], dim=1)
        for block in self.blocks:
            x = block(x)
        if group_token is not None:
            x, group_token = x[:, : -self.num_group_token], x[:, -self.num_group_token :]
        assignment = None
        if self.downsample is not None:
            x, assignment = self.downsample(x, group_token, values, per_patch)
        return x, group_token, assignment


def resize_pos_embed(pos_embed: torch.Tensor, base_grid: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(h0·w0, C) table -> (h·w, C) by bicubic interpolation (align_corners=False), row-major."""
    if grid == base_grid and not torch.compiler.is_exporting():  # torch.export: one graph for every grid
        return pos_embed
    c = pos_embed.shape[-1]
    table = pos_embed.reshape(1, *base_grid, c).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(-1, c)


class GroupViT(nn.Module):
    """Image encoder. Input (B, 3, H, W) normalised RGB; any H, W ≥ patch size (position table resized)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 embed_factors: list[float] = (1, 1), depths: list[int] = (6, 6), num_heads: list[int] = (8, 8),
                 num_group_tokens: list[int] = (64, 0), num_output_groups: list[int] = (8,),
                 hard_assignment: bool = True, gumbel_tau: float = 1.0, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, patch_norm: bool = False, stem: str = "patch",
                 center_assign_keys: bool = False, group_token_residual: bool = True,
                 segment_values: str = "tokens", stem_extra_convs: int = 0, out_proj_dim: int | None = None):
        super().__init__()
        _check_stages(depths, num_heads, num_group_tokens, num_output_groups, embed_factors)
        self.patch_size = patch_size
        if segment_values not in get_args(SegmentValues):
            raise ValueError(f"segment_values must be one of {get_args(SegmentValues)}, got '{segment_values}'")
        self.segment_values = segment_values
        self.base_grid = (img_size // patch_size, img_size // patch_size)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got '{stem}'")
        if stem == "conv":
            self.patch_embed = conv_stem(patch_size, in_chans, embed_dim, patch_norm, stem_extra_convs)
        elif stem_extra_convs:
            raise ValueError(f"stem_extra_convs needs stem 'conv', got stem '{stem}'")
        else:
            self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.pos_embed = nn.Parameter(torch.zeros(self.base_grid[0] * self.base_grid[1], embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # cpu: also under a meta build
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            dim = int(embed_dim * embed_factors[i])
            downsample = None
            if i < len(depths) - 1:
                downsample = GroupingBlock(dim, int(embed_dim * embed_factors[i + 1]), num_heads[i],
                                           num_group_tokens[i], num_output_groups[i],
                                           hard=hard_assignment, gumbel=hard_assignment, gumbel_tau=gumbel_tau,
                                           center_keys=center_assign_keys,
                                           group_token_residual=group_token_residual)
            projector = None
            if i > 0 and num_group_tokens[i] > 0:
                prev = int(embed_dim * embed_factors[i - 1])
                projector = nn.Sequential(nn.LayerNorm(prev),
                                          MixerMlp(num_group_tokens[i - 1], prev // 2, num_group_tokens[i]))
                if prev != dim:
                    projector = nn.Sequential(projector, nn.LayerNorm(prev), nn.Linear(prev, dim, bias=False))
            start = sum(depths[:i])
            self.layers.append(GroupingLayer(dim, depth, num_heads[i], num_group_tokens[i], mlp_ratio, qkv_bias,
                                             drop_rate, attn_drop_rate, dpr[start : start + depth],
                                             downsample, projector))
        self.num_features = int(embed_dim * embed_factors[-1])
        self.norm = nn.LayerNorm(self.num_features)
        # CLIP's output projection (init 'clip' only, loaded from the file): the head becomes x @ proj
        self.proj = nn.Parameter(torch.zeros(self.num_features, out_proj_dim)) if out_proj_dim else None
        self.stem_dtype: torch.dtype | None = None  # set by ``stem_precision`` (training), not saved
        self.apply(_init_weights)

    @property
    def out_features(self) -> int:
        """Width of the output tokens: the encoder's, or CLIP's projection's."""
        return self.num_features if self.proj is None else self.proj.shape[1]

    @property
    def supports_patch_tokens(self) -> bool:
        """Per-patch segments are defined when nothing follows the one grouping block but the final norm
        (``depths [d, 0]``): later blocks would mix segments, and a one-patch segment has no such context."""
        return len(self.layers) == 2 and len(self.layers[1].blocks) == 0 and self.layers[1].downsample is None

    def embed_patches(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The stem, under autocast to ``stem_dtype`` when one is set (a training option, ``train.amp:
        bf16-stem``: on AMX CPUs a conv stem's convolutions run ~2x faster in bf16), fp32 tokens out."""
        if self.stem_dtype is None:
            return self.patch_embed(images)
        with torch.autocast(images.device.type, dtype=self.stem_dtype):
            x, grid = self.patch_embed(images)
        return x.float(), grid

    def forward(self, images: torch.Tensor, per_patch: bool = False) -> VisionOutput:
        """``per_patch``: also ``patch_tokens``, every patch as a one-patch segment of its learned group
        (needs ``supports_patch_tokens``)."""
        if per_patch and not self.supports_patch_tokens:
            raise ValueError("per-patch segments need one grouping block and no block after it (depths [d, 0])")
        x, grid = self.embed_patches(images)
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, self.base_grid, grid))
        group_token, assignments = None, []
        values = x if self.segment_values == "stem" else None  # the first grouping averages stem features
        for layer in self.layers:
            x, group_token, assignment = layer(x, group_token, values, per_patch)
            values = None
            if assignment is not None:
                assignments.append(assignment)
        x = self.head(self.norm(x))
        patches = self.head(self.norm(assignments[0].patch_tokens)) if per_patch else None
        return VisionOutput(tokens=x, pooled=x.mean(dim=1), assignments=assignments, grid=grid,
                            patch_tokens=patches)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Identity, or ``x @ proj`` for a CLIP-initialised encoder (the original's ``forward_image_head``)."""
        return x if self.proj is None else x @ self.proj


def clip_proj_width(ie) -> int | None:
    """The width of CLIP's ``proj`` when ``model.img_encoder`` starts from CLIP (``init`` or the original's
    ``imgnet_pretrained``), else None: CLIP ViT-B maps 768 -> 512, ViT-L 1024 -> 768; other widths keep theirs."""
    if "clip" not in (ie.init, ie.imgnet_pretrained):
        return None
    return CLIP_OUTPUT_WIDTHS.get(ie.embed_dim, ie.embed_dim)


@contextlib.contextmanager
def stem_precision(encoders: list[GroupViT], dtype: torch.dtype | None):
    """Run the encoders' stems under autocast to ``dtype`` inside the block (None: as they are)."""
    before = [e.stem_dtype for e in encoders]
    for e in encoders:
        e.stem_dtype = dtype
    try:
        yield
    finally:
        for e, d in zip(encoders, before, strict=True):
            e.stem_dtype = d


def _check_stages(depths, num_heads, num_group_tokens, num_output_groups, embed_factors) -> None:
    n = len(depths)
    if not (len(num_heads) == len(num_group_tokens) == len(embed_factors) == n):
        raise ValueError("img_encoder: depths, num_heads, num_group_tokens and embed_factors need one entry per stage")
    if len(num_output_groups) != n - 1:
        raise ValueError(f"img_encoder: num_output_groups needs {n - 1} entries (one per grouping block)")
    if n > 1 and num_group_tokens[0] <= 0:
        raise ValueError("img_encoder: the first stage needs group tokens (num_group_tokens[0] > 0)")


def _init_weights(m: nn.Module) -> None:
    """GroupViT/DINO init: trunc-normal(0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

