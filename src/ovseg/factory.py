"""Build models from configs and load them from checkpoints (ovseg's format or the official one)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import OVSEG_FORMAT, read_official, read_weights, save_weights, sniff_format
from .config import config_from_dict, load_config, merge_checked, schema, to_container
from .convert import convert_official_state_dict, official_model_config
from .errors import CheckpointError, ConfigError
from .model import OVSegmentor

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"


def preset_path(name: str) -> Path:
    """A config by preset name (``tiny``, ``ovsegmentor/vit_b16_bert_8g`` …) or by file path."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (name if name.endswith((".yml", ".yaml")) else f"{name}.yml")
    if candidate.is_file():
        return candidate
    known = sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yml"))
    raise ConfigError(f"config '{name}' not found (a file path, or one of: {', '.join(known)})")


def create_model(cfg: DictConfig | str | Path) -> OVSegmentor:
    """A randomly initialised OVSegmentor from a full config, its ``model`` section, or a preset name."""
    if isinstance(cfg, str | Path):
        cfg = load_config(preset_path(str(cfg)))
    return OVSegmentor(cfg.model if "model" in cfg else cfg)


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a readable diff: shape mismatches name the key and both shapes."""
    expected = model.state_dict()
    for key, value in state_dict.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{source}: '{key}' has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)} (a checkpoint of another architecture?)")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source}: does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True)


def model_config_from_official(ckpt_config: dict | None, state_dict: dict[str, torch.Tensor],
                               training: bool) -> DictConfig:
    """ovseg ``model`` config for official weights; an eval build drops the training-only parts."""
    official = (ckpt_config or {}).get("model") or {}
    values = official_model_config(official, state_dict)
    if not training:
        values.update(use_entityloss=False, use_maskloss=False)
    return merge_checked(schema().model, values, "official checkpoint config")


def load_model(path: str | Path, device: str | torch.device = "cpu", training: bool = False,
               opts: list[str] | None = None) -> tuple[OVSegmentor, DictConfig]:
    """Model and its full config from an ovseg ``.safetensors`` or an official ``.pth`` checkpoint.

    ``training`` keeps the training-only parts (entity decoder, momentum encoder) that an official
    stage-1/2 file carries; otherwise they are left out and reported once. ``opts`` override the
    checkpoint's config (``model.…=value``).
    """
    fmt = sniff_format(path)
    if fmt == "safetensors":
        state_dict, meta = read_weights(path)
        stored = json.loads(meta.get("config", "{}"))
        if meta.get("format") == OVSEG_FORMAT:
            cfg = config_from_dict(stored, f"{path} (stored config)")
            if not training:
                cfg.model.use_entityloss = cfg.model.use_maskloss = False
            return _build_and_load(cfg, state_dict, str(path), device, opts, training)
        official_cfg = stored
    else:
        ckpt = read_official(path)
        if "model" not in ckpt or not isinstance(ckpt["model"], dict):
            keys = ", ".join(map(str, list(ckpt)[:5])) + (", …" if len(ckpt) > 5 else "")
            raise CheckpointError(f"{path}: no 'model' state dict inside (top-level keys: {keys})")
        state_dict, official_cfg = ckpt["model"], ckpt.get("config")
    try:
        model_cfg = model_config_from_official(official_cfg, state_dict, training)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unsupported config: {e}") from e
    cfg = schema()
    cfg.model = model_cfg
    return _build_and_load(cfg, state_dict, str(path), device, opts, training)


def _build_and_load(cfg: DictConfig, state_dict: dict, source: str, device: Any, opts: list[str] | None,
                    training: bool) -> tuple[OVSegmentor, DictConfig]:
    if opts:
        cfg = merge_checked(cfg, OmegaConf.from_dotlist(list(opts)), "--opts")
    model = OVSegmentor(cfg.model)
    state_dict, report = convert_official_state_dict(state_dict, set(model.state_dict()))
    if report.summary():
        log.info("%s: left out %s", source, report.summary())
    load_state_dict_checked(model, state_dict, source)
    model.to(device)
    model.train(training)
    return model, cfg


def save_model(model: OVSegmentor, cfg: DictConfig, path: str | Path, extra: dict[str, str] | None = None) -> None:
    """Write ``model`` in ovseg's format (safetensors + resolved config), atomically."""
    full = schema()
    full = merge_checked(full, cfg if "model" in cfg else {"model": cfg}, "config")
    save_weights(model.state_dict(), to_container(full), path, extra)
