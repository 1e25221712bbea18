"""``train.compile``: the compiled image encoder and heads give the eager outputs."""

from __future__ import annotations

import copy

import torch

from ovseg.config import load_config
from ovseg.engine.compilation import compile_hot_modules
from ovseg.factory import create_model, preset_path


def test_compiled_encoder_and_heads_match_eager():
    cfg = load_config(preset_path("tiny"), ["model.img_encoder.img_size=32", "model.img_encoder.patch_size=8"])
    torch.manual_seed(0)
    eager = create_model(cfg).eval()
    compiled = copy.deepcopy(eager)
    compile_hot_modules(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = eager.encode_image(images), compiled.encode_image(images)
    assert torch.allclose(a.image_feat, b.image_feat, atol=1e-4, rtol=1e-4)
    assert torch.allclose(a.image_x, b.image_x, atol=1e-4, rtol=1e-4)
    assert not torch.equal(a.image_feat, torch.zeros_like(a.image_feat))
