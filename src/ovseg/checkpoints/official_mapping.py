"""Official OVSegmentor weights and configs -> ovseg (pure functions, no file I/O).

The official state dict (``MultiLabelContrastive``) uses the same key names as ovseg's modules except:
Conv1d-shaped projector weights (out, in, 1) that ovseg holds as Linear (out, in); keys that the original
stores but never reads (``logit_scale_mask``, the entity decoder's ``assign.*``, BERT's ``position_ids``
buffer from transformers < 4.31); and training-only parts (momentum encoder, entity decoder) that an
evaluation build leaves out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

_PROJECTOR_WEIGHT = re.compile(r"^(img|text|bridge)_projector\.(linear_hidden\.\d+|linear_out)\.weight$")
NEVER_READ = (
    re.compile(r"^logit_scale_mask$"),
    re.compile(r"^multimodal_groupingblock\.blocks\.\d+\.assign\."),
    re.compile(r"^text_encoder\.transformer\.embeddings\.position_ids$"),
)
TRAINING_ONLY_PREFIXES = ("img_encoder_momentum.", "multimodal_groupingblock.", "bridge_projector.")


@dataclass
class ConversionReport:
    """What the conversion left out, grouped by reason (to be reported once to the user)."""

    never_read: list[str] = field(default_factory=list)
    training_only: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.never_read:
            parts.append(f"{len(self.never_read)} keys the original stores but never reads "
                         f"({_prefixes(self.never_read)})")
        if self.training_only:
            parts.append(f"{len(self.training_only)} training-only keys not needed by this build "
                         f"({_prefixes(self.training_only)})")
        return "; ".join(parts)


def _prefixes(keys: list[str]) -> str:
    heads = []
    for k in keys:
        head = ".".join(k.split(".")[:2]) if "." in k else k
        if head not in heads:
            heads.append(head)
    return ", ".join(heads[:4]) + (", …" if len(heads) > 4 else "")


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], model_keys: set[str]
                                ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official keys -> ovseg keys for a model whose state dict has ``model_keys``."""
    out, report = {}, ConversionReport()
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if any(p.search(key) for p in NEVER_READ):
            report.never_read.append(key)
            continue
        if key not in model_keys and key.startswith(TRAINING_ONLY_PREFIXES):
            report.training_only.append(key)
            continue
        if _PROJECTOR_WEIGHT.match(key) and value.ndim == 3 and value.shape[-1] == 1:
            value = value[..., 0]
        if key == "img_encoder.pos_embed" and value.ndim == 3 and value.shape[0] == 1:
            value = value[0]
        out[key] = value
    return out, report


def _get(cfg: dict, path: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


TEXT_TYPES = {"Bert": "bert-base-uncased", "Roberta": "roberta-base", "DistilBert": "distilbert-base-uncased",
              "BertMedium": "prajjwal1/bert-medium"}
IMAGE_KEYS = ("img_size", "patch_size", "in_chans", "embed_dim", "embed_factors", "depths", "num_heads",
              "num_group_tokens", "num_output_groups", "mlp_ratio", "qkv_bias", "drop_rate", "attn_drop_rate",
              "drop_path_rate", "patch_norm", "hard_assignment")


def official_model_config(official: dict, state_dict: dict[str, torch.Tensor]) -> dict:
    """ovseg ``model`` values from the original's ``model`` config section plus the weights' shapes.

    Sizes the original hard-codes or ignores are read from the weights: the projector inner width
    (ProjectMLP's 4096 default) and the BERT dimensions (the YAML's ``layers``/``width`` are ignored).
    """
    img = {**_image_sizes_from_weights(state_dict),
           **{k: official["img_encoder"][k] for k in IMAGE_KEYS if k in official.get("img_encoder", {})}}
    img["fixed"] = False
    text_type = _get(official, "text_encoder.type", "Bert")
    if text_type not in TEXT_TYPES:
        raise ValueError(f"text encoder type '{text_type}' is not supported (known: {', '.join(TEXT_TYPES)})")
    text = {"name": TEXT_TYPES[text_type], "pretrained": False, "hf_overrides": _text_overrides(official, state_dict)}
    model = {"img_encoder": img, "text_encoder": text}
    for key in ("output_dim", "proj_num_layers", "contrast_temperature", "use_entityloss", "use_maskloss",
                "cross_threshold", "group_ratio", "maskloss_weight", "entity_weight"):
        if key in official and not isinstance(official[key], str):
            model[key] = official[key]
    inner = state_dict.get("img_projector.linear_hidden.0.weight")
    if inner is not None:
        model["proj_inner_dim"] = int(inner.shape[0])
    model["use_entityloss"] = any(k.startswith("bridge_projector.") for k in state_dict)
    model["use_maskloss"] = any(k.startswith("img_encoder_momentum.") for k in state_dict)
    return model


def _image_sizes_from_weights(state_dict: dict[str, torch.Tensor]) -> dict:
    """Image-encoder sizes readable from the weights alone (used when a checkpoint carries no config).
    Head counts are not visible in shapes: the paper's 8 stays the default."""
    sizes: dict[str, Any] = {}
    patch = state_dict.get("img_encoder.patch_embed.proj.weight")
    pos = state_dict.get("img_encoder.pos_embed")
    if patch is None or pos is None:
        return sizes
    side = int(round((pos.shape[-2]) ** 0.5))
    sizes.update(embed_dim=int(patch.shape[0]), patch_size=int(patch.shape[-1]), img_size=side * int(patch.shape[-1]))
    stages = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"img_encoder\.layers\.(\d+)\.", k))})
    depths, tokens, outputs = [], [], []
    for i in stages:
        blocks = {int(m.group(1)) for k in state_dict
                  if (m := re.match(rf"img_encoder\.layers\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        token = state_dict.get(f"img_encoder.layers.{i}.group_token")
        tokens.append(int(token.shape[1]) if token is not None else 0)
        fc2 = state_dict.get(f"img_encoder.layers.{i}.downsample.mlp_inter.fc2.weight")
        if fc2 is not None:
            outputs.append(int(fc2.shape[0]))
    if depths:
        sizes.update(depths=depths, num_group_tokens=tokens, num_output_groups=outputs,
                     embed_factors=[1.0] * len(depths), num_heads=[8] * len(depths))
    return sizes


def _text_overrides(official: dict, state_dict: dict[str, torch.Tensor]) -> dict:
    """transformers config fields that differ from the builtin ones (explicit ``hf_bert_config`` first)."""
    explicit = dict(_get(official, "text_encoder.hf_bert_config", {}) or {})
    explicit.pop("attn_implementation", None)
    if explicit:
        return explicit
    prefix = "text_encoder.transformer."
    words = state_dict.get(prefix + "embeddings.word_embeddings.weight")
    if words is None:
        return {}
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))}
    inter = state_dict.get(prefix + "encoder.layer.0.intermediate.dense.weight")
    return {"vocab_size": int(words.shape[0]), "hidden_size": int(words.shape[1]),
            "num_hidden_layers": len(layers),
            "max_position_embeddings": int(state_dict[prefix + "embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state_dict[prefix + "embeddings.token_type_embeddings.weight"].shape[0]),
            **({"intermediate_size": int(inter.shape[0])} if inter is not None else {}),
            **({"num_attention_heads": max(1, int(words.shape[1]) // 64)} if int(words.shape[1]) != 768 else {})}
