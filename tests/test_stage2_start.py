"""Stage 2 starts from a stage-1 result in any accepted format, as the seed's README says: the official
stage-1 ``.pth`` (pickled config, optimizer state, no momentum encoder) or ovseg's own safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from test_checkpoint import DATA, official_state_dict

import ovseg
from ovseg.config import load_config
from ovseg.engine.stages import build_model
from ovseg.factory import preset_path

CPU = torch.device("cpu")


def official_stage1_pth(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full-size stage-1 checkpoint as the original writes it: every stage-1 key of the TSV (no
    ``img_encoder_momentum.*``, no ``logit_scale_mask``), the pickled config of a stage-1 run."""
    config = OmegaConf.load(DATA / "official-config-stage2.yaml")
    config.model.use_maskloss = False
    config.model.text_encoder.fixed = False
    OmegaConf.set_struct(config, True)
    state = official_state_dict("stage1")
    assert not any(k.startswith("img_encoder_momentum.") or k == "logit_scale_mask" for k in state)
    ckpt = {"model": state, "config": config, "epoch": 29, "max_miou": np.float64(50.1), "max_accuracy": 0.0,
            "optimizer": {"state": {}, "param_groups": [{"lr": 8e-5, "params": [0, 1]}]},
            "lr_scheduler": {"last_epoch": 29}}
    path = folder / "best_miou.pth"
    torch.save(ckpt, path)
    return path, state


def stage2_config(stage1: Path):
    opts = [f"checkpoint.stage1_checkpoint={stage1}", "model.text_encoder.pretrained=false"]
    return load_config(preset_path("ovsegmentor/pretrain_stage2"), opts)


def test_stage2_starts_from_the_official_stage1_pth(tmp_path):
    path, state = official_stage1_pth(tmp_path)
    model = build_model(stage2_config(path), CPU)
    own = model.state_dict()
    # the image encoder keeps the original's key names: each stage-1 tensor arrived unchanged
    for key in ("img_encoder.pos_embed", "img_encoder.layers.0.blocks.0.attn.qkv.weight",
                "img_encoder.layers.1.blocks.5.mlp.fc2.weight", "img_encoder.layers.0.group_token",
                "img_encoder.norm.weight", "logit_scale"):
        assert torch.equal(own[key], state[key].reshape(own[key].shape)), key
    # the momentum encoder starts as a copy of the online one (spec §2.3)
    for key, value in model.img_encoder.state_dict().items():
        assert torch.equal(model.img_encoder_momentum.state_dict()[key], value), key
    # and every other stage-1 tensor arrived too: compare with the stage-1 model as ovseg reads the file
    stage1, _ = ovseg.load_model(path, training=True)
    for key, value in stage1.state_dict().items():
        assert torch.equal(own[key], value), key


def test_stage2_starts_from_an_ovseg_stage1_safetensors(tmp_path, tiny_checkpoint):
    cfg = load_config(preset_path("tiny"), ["train.stage=2", "model.use_maskloss=true",
                                             f"checkpoint.stage1_checkpoint={tiny_checkpoint}"])
    model = build_model(cfg, CPU)
    stage1, _ = ovseg.load_model(tiny_checkpoint, training=True)
    for key, value in stage1.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in model.img_encoder.state_dict().items():
        assert torch.equal(model.img_encoder_momentum.state_dict()[key], value), key
