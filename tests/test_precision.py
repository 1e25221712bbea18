"""``evaluate.seg.precision``: the faster paths stay close to fp32 and leave global settings as they were."""

from __future__ import annotations

import pytest
import torch

import ovseg
from ovseg.errors import ConfigError
from ovseg.inference.precision import inference_precision


def _labels(checkpoint, photo, precision: str) -> torch.Tensor:
    cfg = ovseg.load_config().evaluate.seg
    cfg.precision = precision
    seg = ovseg.Segmenter.from_checkpoint(checkpoint, seg_cfg=cfg)
    return seg.predict(photo, ["person", "rocket", "flag", "sky"], bg_thresh=0.0).labels


def test_bf16_matmul_labels_agree_with_fp32(tiny_checkpoint, photos):
    ref = _labels(tiny_checkpoint, photos["astronaut"], "fp32")
    fast = _labels(tiny_checkpoint, photos["astronaut"], "bf16-matmul")
    assert ref.shape == fast.shape and len(ref.unique()) > 1
    assert (ref == fast).float().mean() > 0.98
    assert torch.get_float32_matmul_precision() == "highest"  # restored after the forward pass


def test_the_matmul_setting_is_restored_even_after_an_error():
    with pytest.raises(RuntimeError), inference_precision("bf16-matmul", torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == "medium"
        raise RuntimeError
    assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(ConfigError, match="evaluate.seg.precision"), inference_precision("fp16", torch.device("cpu")):
        pass


def test_fast_window_post_processing_equals_the_plain_formulas():
    """Group maps (max-indices, not argmax) and the (C, H, W) canvas are speed rewrites: same values, ties
    included (the first maximal group wins in both)."""
    from ovseg.inference.slide import ImageEncoding, average_window_logits, group_maps_from_soft

    torch.manual_seed(0)
    soft = torch.rand(2, 1, 5, 4 * 6).softmax(2)
    soft[0, 0, :, :3] = 0.2  # exact ties between all five groups
    maps = group_maps_from_soft(soft, (4, 6), (20, 30))
    up = torch.nn.functional.interpolate(soft.reshape(2, 5, 4, 6), size=(20, 30), mode="bilinear")
    assert torch.equal(maps, up.argmax(dim=1).to(torch.uint8))
    assert maps[0, 0, 0] == 0
    enc = ImageEncoding(size=(20, 40), boxes=[(0, 20, 0, 30), (0, 20, 10, 40)], grid=(4, 6), soft=soft,
                        group_maps=maps, group_emb=torch.zeros(2, 5, 3), image_emb=torch.zeros(2, 3))
    tables = torch.rand(2, 5, 7)
    plain = torch.zeros(20, 40, 7)
    count = torch.zeros(20, 40, 1)
    for k, (y1, y2, x1, x2) in enumerate(enc.boxes):
        plain[y1:y2, x1:x2] += tables[k][maps[k].long()]
        count[y1:y2, x1:x2] += 1
    logits, counted = average_window_logits(enc, tables)
    assert torch.equal(logits, (plain / count).permute(2, 0, 1))
    assert torch.equal(counted, count[..., 0].int())
