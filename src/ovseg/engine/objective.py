"""The training objective: the losses of one batch and their weights (``model`` section of the config).

Stage 1: image-caption InfoNCE + masked entity completion (weight ``entity_weight``); stage 2 adds the
cross-image mask consistency (``maskloss_weight``); ovseg's optional prompt losses each have a ``*_weight``.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from ..losses import (
    assignment_logits,
    contrastive_loss,
    gather_with_grad,
    group_entity_loss,
    multi_label_loss,
    presence,
    start_mask_consistency_loss,
)
from ..model import OVSegmentor
from . import distributed as D
from .text_features import TextFeatures


def compute_losses(model: OVSegmentor, batch: dict, text: TextFeatures, cfg: DictConfig) -> dict[str, torch.Tensor]:
    """{"contrast", ["entity"], ["mask"], "total"} for one batch (images already on the device).

    ``cfg`` is the ``model`` section: loss switches and weights (entity 1.0, mask 0.1 in the paper).
    """
    scale = model.scale()
    image = model.encode_image(batch["image"], per_patch=cfg.patch_label_weight > 0)
    # the mask loss first: its Hungarian matching waits for the host while the other losses are queued
    pending = start_cross_image_loss(model, image, batch, text, cfg) if cfg.use_maskloss else None
    wanted = cfg.multi_label_weight or cfg.group_entity_weight or cfg.patch_label_weight
    entities = step_entities(batch) if wanted else []
    vocabulary = sorted({e for names in entities for e in names})
    feats = text.encode_many(text_passes(batch, cfg, vocabulary), pad_outputs=padding_read(model, cfg))
    losses = {"contrast": contrastive_loss(image.image_x, model.text_projector(feats["caption"][0]), scale)}
    if cfg.use_entityloss:
        _, q_tokens, q_mask = feats["question"]
        _, bridge = model.decode_entity(image.image_feat_before_proj, q_tokens, q_mask)
        losses["entity"] = contrastive_loss(bridge, model.text_projector(feats["answer"][0]), scale)
    extra = group_losses(model, image, entities, vocabulary, feats.get("prompt"), cfg) if vocabulary else {}
    if pending is not None:
        losses["mask"] = pending.finish().value
    losses.update(extra)
    losses["total"] = weighted_total(losses, loss_weights(cfg, list(extra)))
    return losses


def text_passes(batch: dict, cfg: DictConfig, vocabulary: list[str]) -> dict[str, list[str]]:
    """The texts a step encodes with gradient, by pass, in the order the passes used to run one by one."""
    passes = {"caption": batch["caption"]}
    if cfg.use_entityloss:
        passes.update(question=batch["question"], answer=batch["answer"])
    if vocabulary:
        passes["prompt"] = [cfg.entity_prompt.format(e) for e in vocabulary]
    return passes


def padding_read(model: OVSegmentor, cfg: DictConfig) -> tuple[str, ...]:
    """Passes whose padding positions' outputs are read: the masked captions when the entity decoder lets
    padding take part in its self-attention (the original's behaviour, ``mask_padding: false``)."""
    decoder = getattr(model, "multimodal_groupingblock", None)
    return ("question",) if cfg.use_entityloss and decoder is not None and not decoder.mask_padding else ()


def step_entities(batch: dict) -> list[list[str]]:
    """Each sample's caption entities; distributed, those of the global batch (every rank's, in rank order)."""
    if D.is_distributed():
        return [names for part in D.gather_objects(batch["entities"]) for names in part]
    return batch["entities"]


def loss_weights(cfg: DictConfig, extra: list[str]) -> dict[str, float]:
    """The weight of each loss beside the contrastive one (weight 1), in the original's order of summation:
    entity, mask, then ovseg's ``extra`` prompt losses."""
    return {"entity": cfg.entity_weight, "mask": cfg.maskloss_weight, **{n: cfg[f"{n}_weight"] for n in extra}}


def weighted_total(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """contrast + Σ weight · loss over the losses present, summed in ``weights``' order (float sums are
    order-sensitive: this order reproduces the original's numbers)."""
    total = losses["contrast"]
    for name, weight in weights.items():
        if name in losses:
            total = total + weight * losses[name]
    return total


class TrainingObjective(nn.Module):
    """The weighted losses of one batch as a module's forward, so that DDP can wrap it (it hooks ``forward``).

    ``cfg`` is the ``model`` section (loss switches and weights)."""

    def __init__(self, model: OVSegmentor, text: TextFeatures, cfg: DictConfig):
        super().__init__()
        self.model, self.text, self.cfg = model, text, cfg

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return compute_losses(self.model, batch, self.text, self.cfg)


def group_losses(model: OVSegmentor, image, entities: list[list[str]], vocabulary: list[str],
                 pooled: tuple[torch.Tensor, ...], cfg: DictConfig) -> dict:
    """ovseg's optional losses on the caption entities' prompts ("a photo of a {entity}."); ``pooled`` is the
    prompt pass of ``vocabulary`` (pooled features first), ``entities`` those of ``step_entities``.

    Distributed, they are computed over the global batch on every rank (features gathered with gradient):
    the gather's backward sums the W ranks' copies and DDP divides by W, so the gradient is the global one.
    """
    image_x, groups, patches = image.image_x, image.image_feat, image.patch_feat
    if D.is_distributed():
        image_x = gather_with_grad(image_x)
        by_segment = cfg.group_entity_weight > 0 or cfg.multi_label_pooling == "max"
        groups = gather_with_grad(groups) if by_segment else groups
        patches = gather_with_grad(patches) if patches is not None else None
    prompts = model.text_projector(pooled[0])
    present = presence(entities, vocabulary, prompts.device)
    scale, out = model.scale(), {}
    if cfg.multi_label_weight > 0:
        scored = groups if cfg.multi_label_pooling == "max" else image_x
        out["multi_label"] = multi_label_loss(scored, prompts, present, scale)
    if cfg.patch_label_weight > 0:  # the unit that scoring: patches tests, each prompt by its best patch
        out["patch_label"] = multi_label_loss(patches, prompts, present, scale)
    if cfg.group_entity_weight > 0:
        out["group_entity"] = group_entity_loss(groups, prompts, model.background_embedding, present, scale)
    return out


def start_cross_image_loss(model: OVSegmentor, image, batch: dict, text: TextFeatures, cfg: DictConfig):
    """The anchor's online group queries on the partner's momentum keys vs the partner's own maps
    (a ``PendingMaskLoss``: call ``finish()`` for the value)."""
    with torch.no_grad():
        cross = model.encode_image(batch["cross_image"], momentum=True)
        entity, _, _ = text.encode(batch["cross_entity"])
        entity = model.text_projector(entity)  # gating only: no gradient (as the original)
    a_cross = cross.assignments[-1]
    target = assignment_logits(a_cross.q, a_cross.k)
    pred = assignment_logits(image.assignments[-1].q, a_cross.k)
    p = model.cfg.img_encoder.patch_size
    size = (cross.grid[0] * p, cross.grid[1] * p)
    return start_mask_consistency_loss(pred.float(), target.float(), image.image_feat.detach().float(),
                                       entity.float(), cross.grid, size, cfg.cross_threshold, cfg.group_ratio)

