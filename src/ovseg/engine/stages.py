"""The model a training stage starts from: stage 1 fresh, stage 2 from the stage-1 result (spec §2.3)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ..checkpoints import load_model
from ..errors import ConfigError
from ..factory import create_model
from ..model import OVSegmentor
from ..ranks import is_distributed
from .sync_batchnorm import convert_batchnorm


def build_model(cfg: DictConfig, device: torch.device) -> OVSegmentor:
    """The model of ``cfg.train.stage`` on ``device``, in training mode; several processes normalise their
    batch norms over the global batch."""
    model = create_model(cfg)
    if cfg.train.stage == 2:
        init_from_stage1(model, cfg.checkpoint.stage1_checkpoint)
    if is_distributed():
        model = convert_batchnorm(model, device.type)
    return model.to(device).train()


def init_from_stage1(model: OVSegmentor, path: str | None) -> None:
    """Load the stage-1 weights into a stage-2 model and start its momentum (EMA) image encoder as a copy
    of the online one; every other key must fit, so that a checkpoint of another model is refused."""
    if not path:
        raise ConfigError("stage 2 needs checkpoint.stage1_checkpoint (the stage-1 result to start from)")
    stage1, _ = load_model(path, training=True)
    missing, unexpected = model.load_state_dict(stage1.state_dict(), strict=False)
    bad = [k for k in missing if not k.startswith("img_encoder_momentum.")] + list(unexpected)
    if bad:
        raise ConfigError(f"{path}: does not fit the stage-2 model ({len(bad)} keys differ, e.g. {bad[0]})")
    model.img_encoder_momentum.load_state_dict(model.img_encoder.state_dict())
