"""Recompute the outputs of a reference folder (``shared/reference`` format) with ovseg's own code.

Each ``compute_*`` function returns {entry name: tensor} for the entries it knows; which inputs exist,
the sizes, the class list, the settings and the crop layout all come from the folder's ``config.json``
and ``manifest.json``, never from constants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..inference.head import background_flags, crop_class_table, group_class_scores
from ..inference.slide import ImageEncoding, average_window_logits
from ..losses import assignment_logits, contrastive_loss, mask_consistency_loss
from ..model import OVSegmentor, class_embeddings

Tensors = dict[str, torch.Tensor]


def debug_taps(model: OVSegmentor) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """Forward hooks that record the debug taps of the reference (tap.*)."""
    enc, store, handles = model.img_encoder, {}, []

    def keep(name: str, pick: Callable[[Any], torch.Tensor]):
        return lambda _m, _i, out: store.__setitem__(name, pick(out))

    handles.append(enc.patch_embed.register_forward_hook(keep("patch_embed", lambda o: o[0])))
    first = enc.layers[0]
    if len(first.blocks):
        handles.append(first.blocks[-1].register_forward_hook(keep("layer0_blocks_out", lambda o: o)))
    if first.downsample is not None:
        handles.append(first.downsample.register_forward_hook(keep("grouping_out", lambda o: o[0])))
    if len(enc.layers[-1].blocks):
        handles.append(enc.layers[-1].blocks[-1].register_forward_hook(keep("last_layer_out", lambda o: o)))
    bert_embeddings = getattr(model.text_encoder.transformer, "embeddings", None)
    if bert_embeddings is not None:
        handles.append(bert_embeddings.register_forward_hook(keep("bert_embeddings_out", lambda o: o)))
    return store, lambda: [h.remove() for h in handles]


def compute_image(model: OVSegmentor, io: Tensors, name: str, momentum: bool = False) -> Tensors:
    """img.<name>[_momentum].* for input ``input.<name>``."""
    out = model.encode_image(io[f"input.{name}"], momentum=momentum)
    a = out.assignments[-1]
    prefix = f"img.{name}{'_momentum' if momentum else ''}."
    values = {"image_x": out.image_x, "image_x_norm": F.normalize(out.image_x, dim=-1),
              "image_feat": out.image_feat, "image_feat_norm": F.normalize(out.image_feat, dim=-1),
              "image_x_before_proj": out.image_x_before_proj, "image_feat_before_proj": out.image_feat_before_proj,
              "attn_soft": a.soft, "attn_hard": a.hard, "attn_q": a.q, "attn_k": a.k}
    return {prefix + k: v for k, v in values.items()}


def compute_text(model: OVSegmentor, io: Tensors, class_count: int) -> Tensors:
    """text.captions.*, text.classes.* and img.*.zero_shot_logits."""
    out: Tensors = {}
    if "text.captions.input_ids" in io:
        cap = model.encode_text(io["text.captions.input_ids"], io["text.captions.attention_mask"])
        out.update({"text.captions.text_x": cap.text_x, "text.captions.text_x_norm": F.normalize(cap.text_x, dim=-1),
                    "text.captions.text_x_before_proj": cap.text_x_before_proj,
                    "text.captions.text_feat_before_proj": cap.tokens,
                    "text.captions.text_feat_after_proj": model.text_projector(cap.tokens)})
    if "text.classes.input_ids" in io:
        cls = model.encode_text(io["text.classes.input_ids"], io["text.classes.attention_mask"])
        out["text.classes.text_x"] = cls.text_x
        out["text.classes.embedding"] = class_embeddings(cls.text_x, class_count)
    return out


def compute_entity(model: OVSegmentor, io: Tensors, image_tokens: torch.Tensor) -> Tensors:
    """entity.* from the batch224 segment tokens and the stored question/answer ids."""
    question = model.encode_text(io["entity.question.input_ids"], io["entity.question.attention_mask"])
    decoded, bridge = model.decode_entity(image_tokens, question.tokens, io["entity.question.attention_mask"])
    answer = model.encode_text(io["entity.answer.input_ids"], io["entity.answer.attention_mask"])
    return {"entity.question_feat": question.tokens, "entity.decoder_tokens": decoded,
            "entity.question_out": decoded[:, 0], "entity.bridge_out": bridge, "entity.answer_x": answer.text_x}


def compute_losses(model: OVSegmentor, io: Tensors, got: Tensors) -> Tensors:
    """loss.contrastive, loss.entity, loss.mask_rand.*, loss.mask_model.*."""
    out: Tensors = {}
    scale, cfg = model.scale(), model.cfg
    if "img.batch224.image_x" in got and "text.captions.text_x" in got:
        n = got["img.batch224.image_x"].shape[0]
        out["loss.contrastive"] = contrastive_loss(got["img.batch224.image_x"], got["text.captions.text_x"][:n], scale)
    if "entity.bridge_out" in got:
        out["loss.entity"] = contrastive_loss(got["entity.bridge_out"], got["entity.answer_x"], scale)
    if "loss.mask_rand.in_mask1" in io:
        out.update(_mask_rand(io, model, cfg))
    if "loss.mask_model.cross_entity.input_ids" in io and cfg.use_maskloss:
        out.update(_mask_model(model, io))
    return out


def _mask_size(model: OVSegmentor, grid: tuple[int, int]) -> tuple[int, int]:
    p = model.cfg.img_encoder.patch_size
    return grid[0] * p, grid[1] * p


def _mask_rand(io: Tensors, model: OVSegmentor, cfg) -> Tensors:
    m1 = io["loss.mask_rand.in_mask1"].clone().requires_grad_(True)
    side = int(round(m1.shape[-1] ** 0.5))
    grid = (side, side)
    with torch.enable_grad():
        res = mask_consistency_loss(m1, io["loss.mask_rand.in_mask2"], io["loss.mask_rand.in_groups"],
                                    io["loss.mask_rand.in_noun_feat"], grid, _mask_size(model, grid),
                                    cfg.cross_threshold, cfg.group_ratio)
        (grad,) = torch.autograd.grad(res.value, m1)
    arange = torch.arange(m1.shape[1]).expand(m1.shape[0], -1)
    return {"loss.mask_rand.value": res.value.detach(), "loss.mask_rand.gating_idx": res.gated,
            "loss.mask_rand.hungarian_idx1": arange, "loss.mask_rand.hungarian_idx2": res.match,
            "loss.mask_rand.grad_mask1": grad}


def _mask_model(model: OVSegmentor, io: Tensors) -> Tensors:
    images = io["input.batch224"]
    anchor = model.encode_image(images)
    cross = model.encode_image(images[torch.arange(images.shape[0]).flip(0)], momentum=True)
    target = assignment_logits(cross.assignments[-1].q, cross.assignments[-1].k)
    pred = assignment_logits(anchor.assignments[-1].q, cross.assignments[-1].k)
    noun = model.encode_text(io["loss.mask_model.cross_entity.input_ids"],
                             io["loss.mask_model.cross_entity.attention_mask"]).text_x
    res = mask_consistency_loss(pred, target, anchor.image_feat, noun, cross.grid, _mask_size(model, cross.grid),
                                model.cfg.cross_threshold, model.cfg.group_ratio)
    arange = torch.arange(pred.shape[1]).expand(pred.shape[0], -1)
    return {"loss.mask_model.attn_map3": target, "loss.mask_model.attn_map_cross1": pred,
            "loss.mask_model.noun_feat": noun, "loss.mask_model.gating_idx": res.gated,
            "loss.mask_model.hungarian_idx1": arange, "loss.mask_model.hungarian_idx2": res.match,
            "loss.mask_model.value": res.value}


def compute_crops(prefix: str, enc: ImageEncoding, text_emb: torch.Tensor, scale: torch.Tensor, top_k: int,
                  settings: list[dict], crop_names: list[str]) -> Tensors:
    """seg.<crop>.* per window: soft map, group map, embeddings, scores and background decisions."""
    scores = group_class_scores(enc.group_emb, enc.image_emb, text_emb, scale, top_k)
    out: Tensors = {}
    for k, crop in enumerate(crop_names):
        p = f"{prefix}{crop}."
        out.update({p + "soft_lowres": enc.soft[k : k + 1], p + "group_map": enc.group_maps[k],
                    p + "group_emb_norm": enc.group_emb[k], p + "image_emb_norm": enc.image_emb[k : k + 1],
                    p + "group_affinity_raw": scores.raw[k], p + "group_softmax_pre": scores.pre[k],
                    p + "image_softmax": scores.image[k : k + 1], p + "topk_classes": scores.topk[k : k + 1],
                    p + "group_affinity": scores.probs[k]})
        for s in settings:
            if s["with_bg"]:
                flags, tau = background_flags(scores.probs[k : k + 1], s["bg_thresh"])
                out[p + f"{s['name']}.bg_thresh_used"] = tau[0]
                out[p + f"{s['name']}.bg_group_flags"] = flags[0].to(torch.uint8)
    return out


def compute_slide(prefix: str, enc: ImageEncoding, text_emb: torch.Tensor, scale: torch.Tensor, top_k: int,
                  settings: list[dict], ori_hw: tuple[int, int], steps: dict[str, int]) -> Tensors:
    """seg.<prefix>.<setting>.* of the full sliding-window (or whole) inference."""
    probs = group_class_scores(enc.group_emb, enc.image_emb, text_emb, scale, top_k).probs
    out: Tensors = {}
    for s in settings:
        table = crop_class_table(probs, s["bg_thresh"] if s["with_bg"] else None)
        avg, count = average_window_logits(enc, table)
        final = F.interpolate(avg[None], size=ori_hw, mode="bilinear", align_corners=False)[0]
        p = f"{prefix}{s['name']}."
        out[p + "label_map"] = final.softmax(0).argmax(0).to(torch.uint8)
        for field, field_tensor in (("avg_logits_strided", avg), ("final_logits_strided", final)):
            step = steps.get(p + field, 8)
            out[p + field] = field_tensor[:, ::step, ::step]
        out[p + "avg_logits_sum"] = avg.double().sum()
        out[p + "final_logits_sum"] = final.double().sum()
        out[p + "final_logits_sqsum"] = final.double().pow(2).sum()
        out[p + "final_prob_max_sum"] = final.softmax(0).amax(0).double().sum()
        out[prefix + "count_mat"] = count.to(torch.uint8)
    out[prefix + "crop_boxes"] = torch.tensor(enc.boxes, dtype=torch.int64)
    return out

