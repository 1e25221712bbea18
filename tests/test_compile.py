"""``train.compile``: the compiled image encoder, heads, text transformer and entity decoder give the eager
outputs."""

from __future__ import annotations

import copy

import torch

from ovseg.config import load_config
from ovseg.engine.compilation import compile_hot_modules
from ovseg.factory import create_model, preset_path


def eager_and_compiled(*opts: str):
    """A tiny 32-px model in eval mode and a compiled copy with the same weights."""
    cfg = load_config(preset_path("tiny"), ["model.img_encoder.img_size=32", "model.img_encoder.patch_size=8", *opts])
    torch.manual_seed(0)
    eager = create_model(cfg).eval()
    compiled = copy.deepcopy(eager)
    compile_hot_modules(compiled)
    return eager, compiled


def test_compiled_encoder_and_heads_match_eager():
    eager, compiled = eager_and_compiled()
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = eager.encode_image(images), compiled.encode_image(images)
    assert torch.allclose(a.image_feat, b.image_feat, atol=1e-4, rtol=1e-4)
    assert torch.allclose(a.image_x, b.image_x, atol=1e-4, rtol=1e-4)
    assert not torch.equal(a.image_feat, torch.zeros_like(a.image_feat))


def test_compiled_text_side_matches_eager_at_any_caption_length():
    """The text transformer and entity decoder are compiled for dynamic lengths: each new padded length
    must give the eager result (not a stale graph of another length)."""
    eager, compiled = eager_and_compiled("model.use_entityloss=true")
    segments = torch.randn(2, 4, 64)
    with torch.no_grad():
        for length in (7, 12):
            ids = torch.randint(1000, 2000, (2, length))
            mask = torch.ones(2, length, dtype=torch.long)
            mask[1, length - 3:] = 0  # padding in one caption
            (pa, ta), (pb, tb) = eager.text_encoder(ids, mask), compiled.text_encoder(ids, mask)
            assert ta.shape == tb.shape == (2, length, 64)
            assert torch.allclose(pa, pb, atol=1e-4, rtol=1e-4) and torch.allclose(ta, tb, atol=1e-4, rtol=1e-4)
            da, ba = eager.decode_entity(segments, ta, mask)
            db, bb = compiled.decode_entity(segments, ta, mask)
            assert torch.allclose(da, db, atol=1e-4, rtol=1e-4) and torch.allclose(ba, bb, atol=1e-4, rtol=1e-4)
