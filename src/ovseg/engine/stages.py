"""The model a training stage starts from: stage 1 fresh, stage 2 from the stage-1 result (spec §2.3)."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from ..checkpoints import load_model
from ..checkpoints.backbones import backbone_init, freeze_backbone, load_backbone, prepare_backbone
from ..errors import ConfigError
from ..factory import create_model
from ..model import OVSegmentor
from ..ranks import is_distributed
from .sync_batchnorm import convert_batchnorm

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, device: torch.device) -> OVSegmentor:
    """The model of ``cfg.train.stage`` on ``device``, in training mode; several processes normalise their
    batch norms over the global batch.

    The image encoder starts from ``model.img_encoder.init``'s pretrained backbone in stage 1, and in
    stage 2 only when no stage-1 checkpoint is given (that checkpoint wins). The backbone file is read and
    checked before the model is built, so a wrong file fails at once."""
    init = backbone_init(cfg.model.img_encoder)
    from_stage1 = cfg.train.stage == 2 and (cfg.checkpoint.stage1_checkpoint or init is None)
    start = prepare_backbone(init, cfg.model) if init is not None and not from_stage1 else None
    model = create_model(cfg)
    if from_stage1:
        if init is not None:
            log.info("model.img_encoder.init '%s' not applied: the stage-1 checkpoint holds the backbone", init.kind)
        init_from_stage1(model, cfg.checkpoint.stage1_checkpoint)
    elif start is not None:
        load_backbone(model, start)
    if init is not None and init.freeze:
        freeze_backbone(model, init)
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
