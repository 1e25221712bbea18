"""How a file becomes a model: ovseg's ``.safetensors`` or the official ``.pth`` -> (OVSegmentor, config).

Every checkpoint a user opens goes through ``load_model``; the file's config passes the trust boundary
(``checkpoints.trust``) and its sizes are checked against its tensors before the model is allocated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import merge_checked, schema, to_container
from ..errors import CheckpointError
from ..model import OVSegmentor
from .files import OVSEG_FORMAT, read_header, read_shapes, read_weights, save_weights, sniff_format
from .official import read_official
from .official_mapping import convert_official_state_dict, official_model_config
from .trust import check_shapes, model_config_from_file, parse_stored_config

log = logging.getLogger(__name__)


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a readable diff: shape mismatches name the key and both shapes."""
    check_shapes(model, {key: tuple(value.shape) for key, value in state_dict.items()}, source)
    expected = model.state_dict()
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


def load_model(path: str | Path, device: str | torch.device = "cpu", training: bool = False,
               opts: list[str] | None = None) -> tuple[OVSegmentor, DictConfig]:
    """Model and its config from an ovseg ``.safetensors`` or an official ``.pth`` checkpoint.

    The file's config passes ``trust.model_config_from_file`` (only its ``model`` section is kept) and the
    model it describes is checked against the file's tensor shapes before it is allocated. ``training``
    keeps the training-only parts (entity decoder, momentum encoder) that an official stage-1/2 file
    carries; otherwise they are left out and reported once. ``opts`` (``model.…=value``, the user's own
    words) override the checkpoint's config after the check.
    """
    source = str(path)
    if sniff_format(path) == "safetensors":
        meta = read_header(path)
        stored = parse_stored_config(meta.get("config"), source)
        if meta.get("format") == OVSEG_FORMAT:
            return load_ovseg_weights(path, stored, source, device, training, opts)
        state_dict, _ = read_weights(path)
        official_cfg = stored
    else:
        state_dict, official_cfg = _read_official_model(path)
    try:
        model_values = official_model_config(_official_section(official_cfg), state_dict)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{source}: unsupported config: {e}") from e
    model_values = model_config_from_file({"model": model_values}, source)
    cfg = _full_config(model_values, source, training, opts)
    return _load(_build_checked(cfg, {}, source), cfg.model, state_dict, source, device, training), cfg


def load_ovseg_weights(path: str | Path, stored_config: Any, config_source: str, device: str | torch.device = "cpu",
                       training: bool = False, opts: list[str] | None = None) -> tuple[OVSegmentor, DictConfig]:
    """(model, config) from ovseg's safetensors ``path`` under ``stored_config`` (untrusted: the header's own,
    or a Hub folder's ``config.json`` named by ``config_source``): the config checked, the model built on the
    meta device and compared with the file's shapes, then allocated and loaded."""
    model_values = model_config_from_file(stored_config, config_source)
    cfg = _full_config(model_values, config_source, training, opts)
    probe = _build_checked(cfg, read_shapes(path), str(path))
    state_dict, _ = read_weights(path)
    return _load(probe, cfg.model, state_dict, str(path), device, training), cfg


def model_config_from_official(ckpt_config: dict | None, state_dict: dict[str, torch.Tensor],
                               training: bool) -> DictConfig:
    """ovseg ``model`` config for official weights (checked as any file's); an eval build drops the
    training-only parts."""
    values = model_config_from_file({"model": official_model_config(_official_section(ckpt_config), state_dict)},
                                    "official checkpoint config")
    if not training:
        values.update(use_entityloss=False, use_maskloss=False)
    return merge_checked(schema().model, values, "official checkpoint config")


def _official_section(ckpt_config: Any) -> dict:
    official = ckpt_config.get("model") if isinstance(ckpt_config, dict) else None
    return official if isinstance(official, dict) else {}


def _read_official_model(path: str | Path) -> tuple[dict[str, torch.Tensor], Any]:
    ckpt = read_official(path)
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        keys = ", ".join(map(str, list(ckpt)[:5])) + (", …" if len(ckpt) > 5 else "")
        raise CheckpointError(f"{path}: no 'model' state dict of tensors inside (top-level keys: {keys})")
    return weights, ckpt.get("config")


def _full_config(model_values: dict, source: str, training: bool, opts: list[str] | None) -> DictConfig:
    """Schema defaults with the file's (checked) ``model`` section, then the user's ``opts``."""
    cfg = schema()
    cfg.model = merge_checked(cfg.model, model_values, f"{source} (stored config)")
    if not training:
        cfg.model.use_entityloss = cfg.model.use_maskloss = False
    if opts:
        cfg = merge_checked(cfg, OmegaConf.from_dotlist(list(opts)), "--opts")
    return cfg


def _build_checked(cfg: DictConfig, shapes: dict[str, tuple[int, ...]], source: str) -> OVSegmentor:
    """The model on the meta device (nothing allocated), its shapes compared with the file's."""
    model_cfg = cfg.model.copy()
    model_cfg.text_encoder.pretrained = False  # the shapes are the config's; no weights are read here
    try:
        with torch.device("meta"):
            model = OVSegmentor(model_cfg)
    except (ValueError, TypeError, RuntimeError, OverflowError, ZeroDivisionError, AssertionError) as e:
        raise CheckpointError(f"{source}: its config does not describe a model ovseg can build "
                              f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from e
    check_shapes(model, shapes, source)
    return model


def _load(probe: OVSegmentor, model_cfg: DictConfig, state_dict: dict[str, torch.Tensor], source: str,
          device: Any, training: bool) -> OVSegmentor:
    """Official key names mapped, shapes compared with the meta ``probe`` (before anything is allocated),
    then the model of ``model_cfg`` allocated and loaded (strict, with a readable diff)."""
    state_dict, report = convert_official_state_dict(state_dict, set(probe.state_dict()))
    if report.summary():
        log.info("%s: left out %s", source, report.summary())
    check_shapes(probe, {key: tuple(value.shape) for key, value in state_dict.items()}, source)
    model = OVSegmentor(model_cfg)
    load_state_dict_checked(model, state_dict, source)
    model.to(device)
    model.train(training)
    return model


def save_model(model: OVSegmentor, cfg: DictConfig, path: str | Path, extra: dict[str, str] | None = None) -> None:
    """Write ``model`` in ovseg's format (safetensors + resolved config), atomically."""
    save_weights(model.state_dict(), resolved_config(cfg), path, extra)


def resolved_config(cfg: DictConfig) -> dict:
    """A full config, or a ``model`` section on schema defaults, as the plain data a file stores."""
    return to_container(merge_checked(schema(), cfg if "model" in cfg else {"model": cfg}, "config"))
