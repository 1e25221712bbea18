"""``evaluate.seg.precision``: the faster paths stay close to fp32 and leave global settings as they were."""

from __future__ import annotations

import pytest
import torch

import ovseg
from ovseg.errors import ConfigError
from ovseg.inference import precision as precision_module
from ovseg.inference.precision import describe_precision, inference_precision, resolve_precision
from ovseg.model.layers import onednn_linears

CPU = torch.device("cpu")
native_bf16 = pytest.mark.skipif(precision_module.cpu_bf16_kind() is None, reason="this CPU has no native bf16")


def _labels(checkpoint, photo, precision: str) -> torch.Tensor:
    cfg = ovseg.load_config().evaluate.seg
    cfg.precision = precision
    seg = ovseg.Segmenter.from_checkpoint(checkpoint, seg_cfg=cfg)
    return seg.predict(photo, ["person", "rocket", "flag", "sky"], bg_thresh=0.0).labels


@native_bf16
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


def test_auto_on_a_cpu_is_fp32_through_onednn_with_fp32_labels(tiny_checkpoint, photos):
    """The default runs the ViT's linears as fused oneDNN products: other summation order, same labels."""
    assert resolve_precision("auto", CPU) == "fp32-onednn"
    assert describe_precision("auto", CPU) == "auto (fp32 through oneDNN)"
    assert ovseg.load_config().evaluate.seg.precision == "auto"
    for name in ("astronaut", "coffee"):  # random weights: one near-tied pixel of 262 144 may flip
        auto, ref = _labels(tiny_checkpoint, photos[name], "auto"), _labels(tiny_checkpoint, photos[name], "fp32")
        assert (auto == ref).float().mean() >= 0.9999


def test_onednn_linears_equal_the_modules_and_stay_out_of_training():
    torch.manual_seed(0)
    model = ovseg.create_model("tiny").eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model.encode_image(images)
        with onednn_linears():
            fused = model.encode_image(images)
    assert torch.allclose(fused.image_feat, plain.image_feat, atol=1e-5)
    assert not torch.equal(fused.image_feat, plain.image_feat) or not torch.backends.mkldnn.is_available()
    with onednn_linears():  # under autograd the modules run as usual: gradients flow, bit-identical
        trained = model.encode_image(images)
    trained.image_feat.sum().backward()
    assert torch.equal(trained.image_feat.detach(), plain.image_feat)


def test_auto_uses_bf16_only_where_its_recorded_agreement_reaches_the_bar(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_kind", lambda: "amx")
    monkeypatch.setitem(precision_module.BF16_AGREEMENT, "amx", 0.9986)
    assert resolve_precision("auto", CPU) == "fp32-onednn"
    monkeypatch.setitem(precision_module.BF16_AGREEMENT, "amx", 0.9995)
    assert resolve_precision("auto", CPU) == "bf16-matmul"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("fp32", CPU) == "fp32"


def test_bf16_on_a_cpu_without_native_bf16_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_kind", lambda: None)
    for choice in ("bf16-matmul", "bf16"):
        with pytest.raises(ConfigError, match=f"precision={choice}: this CPU has no native bf16") as err:
            resolve_precision(choice, CPU)
        assert "\n" not in str(err.value)
    assert resolve_precision("auto", CPU) == "fp32-onednn"
