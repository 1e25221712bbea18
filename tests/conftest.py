"""Shared fixtures: small checkpoints written once per session, real photos from scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ovseg

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An ovseg-format checkpoint of the tiny preset (random weights, seed 0)."""
    torch.manual_seed(0)
    cfg = ovseg.load_config(ovseg.factory.preset_path("tiny"))
    model = ovseg.create_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    ovseg.save_model(model, cfg, path)
    return path


@pytest.fixture(scope="session")
def reference_weights() -> Path:
    """The reference fixtures' weights (original key names; loadable by ``ovseg.load_model``)."""
    return REFERENCE_DIR / "weights.safetensors"


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos bundled with scikit-image (no download)."""
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
            "camera": data.camera()}
