"""The per-class decision, one code path for every caller (Segmenter, evaluation harness, demo, web page):
window encodings + class embeddings -> averaged class maps (C, H, W) at the processing scale.

Segments (the learned groups, or every patch with ``scoring: patches``) are scored against the classes
with GroupViT's top-k filter (``head``); background is a threshold on the group-class probabilities (the
original) or a learned background class; the per-window tables are averaged over the windows covering each
pixel and, with ``refine: pamr``, refined along colour edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ..model import OVSegmentor
from .head import crop_class_table, group_class_scores
from .refine import RefineSettings
from .slide import ImageEncoding, average_patch_logits, average_window_logits, window_group_basis


def class_logits(model: OVSegmentor, cfg: DictConfig, enc: ImageEncoding, text: torch.Tensor,
                 bg_thresh: float | None, top_k: int | None = None) -> tuple[torch.Tensor, bool]:
    """text (N, D) L2-normalised class embeddings -> (logits (C, H, W), with_background). With a background
    (a ``bg_thresh``, or ``cfg.background == 'learned'``) channel 0 is background and C = N + 1."""
    learned = cfg.background == "learned"
    if learned:
        background = F.normalize(model.background_embedding.float(), dim=-1)
        text, bg_thresh = torch.cat([background.unsqueeze(0), text]), 0.0
    scores = group_class_scores(segments(cfg, enc), enc.image_emb, text, model.scale().float(),
                                top_k or cfg.top_k, always_keep=0 if learned else None)
    table = scores.probs if learned else crop_class_table(scores.probs, bg_thresh)
    return class_maps(cfg, enc, table), bg_thresh is not None


def segments(cfg: DictConfig, enc: ImageEncoding) -> torch.Tensor:
    """(K, S, D) what is scored against the class names: the learned groups (the paper) or, with
    ``scoring: patches``, every patch as a one-patch segment of its group."""
    if cfg.scoring == "groups":
        return enc.group_emb
    if enc.patch_emb is None:
        raise ValueError("scoring: patches needs an ImageEncoding made with per_patch=True")
    return enc.patch_emb


def class_maps(cfg: DictConfig, enc: ImageEncoding, table: torch.Tensor) -> torch.Tensor:
    """Per-window segment→class tables (K, S, C) -> window-averaged class maps (C, H, W), refined along
    colour edges when ``refine: pamr``. Groups: refinement is linear, so it is applied once per image to
    the window-group maps (cached in ``enc``) and every vocabulary or threshold costs one product.
    Patches: each window's patch grid is resized bilinearly and the (few) class maps are refined."""
    if cfg.refine != "none" and enc.image is None:
        raise ValueError("refine: pamr needs the processed image in the ImageEncoding")
    if cfg.scoring == "patches":
        logits = average_patch_logits(enc, table)
        return logits if cfg.refine == "none" else _refined(cfg, enc, logits)
    if cfg.refine == "none":
        return average_window_logits(enc, table)[0]
    key = RefineSettings.from_config(cfg)
    if key not in enc.refined_basis:
        enc.refined_basis[key] = _refined(cfg, enc, window_group_basis(enc))
    return torch.einsum("mhw,mc->chw", enc.refined_basis[key], table.reshape(-1, table.shape[-1]).float())


def _refined(cfg: DictConfig, enc: ImageEncoding, maps: torch.Tensor) -> torch.Tensor:
    """PAMR of (M, H, W) maps; the image's colour affinities are computed once per variant, temperature and
    dilations and reused by every vocabulary, threshold and iteration count."""
    image, settings = enc.image.to(maps.device).float(), RefineSettings.from_config(cfg)
    if settings.affinity_key not in enc.affinity:
        enc.affinity[settings.affinity_key] = settings.affinity(image)
    return settings.refine(image, maps, enc.affinity[settings.affinity_key])
