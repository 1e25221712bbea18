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
