"""The SAM-style predictor (set_image once, predict many vocabularies, predict_batch, bounded caches) and the
open_clip-style entry points (list_presets, create_model_and_transforms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

import ovseg
from ovseg.errors import ImageError
from ovseg.inference.slide import labels_and_scores

NAMES, OTHER = ["sky", "person", "rocket"], ["flag", "ground"]


@pytest.fixture(scope="module")
def model() -> ovseg.OVSegmentor:
    torch.manual_seed(0)
    return ovseg.create_model("tiny").eval()


@pytest.fixture(scope="module")
def images(photos) -> list[np.ndarray]:
    """Small photos: two of one size (two windows each after the resize), one of another (three windows)."""
    return [photos["astronaut"][::4, ::3].copy(), photos["coffee"][::3, ::3][:128, :171].copy(),
            photos["chelsea"][::3, ::3].copy()]


def small() -> DictConfig:
    """The harness at half scale (short side 224, 224-px windows every 112 px): the same code, 4× less work."""
    return ovseg.load_config(None, ["evaluate.seg.short_side=224", "evaluate.seg.crop_size=224",
                                    "evaluate.seg.stride=112"]).evaluate.seg


def counting(model: ovseg.OVSegmentor, monkeypatch) -> list[int]:
    """The batch size of every image-encoder call from now on."""
    calls, encode = [], model.encode_image

    def recorded(images, *args, **kwargs):
        calls.append(len(images))
        return encode(images, *args, **kwargs)

    monkeypatch.setattr(model, "encode_image", recorded)
    return calls


def test_set_image_then_predict_equals_the_one_call_form(model, images):
    one_call = ovseg.Segmenter(model, small()).predict(images[0], NAMES)
    seg = ovseg.Segmenter(model, small())
    seg.set_image(images[0])
    assert seg.is_image_set
    pred = seg.predict(NAMES)
    assert pred.class_names == ["background", *NAMES] and pred.labels.shape == images[0].shape[:2]
    assert torch.equal(pred.labels, one_call.labels) and torch.equal(pred.logits, one_call.logits)


def test_many_vocabularies_encode_the_image_once(model, images, monkeypatch):
    seg = ovseg.Segmenter(model, small())
    calls = counting(model, monkeypatch)
    seg.set_image(images[0])
    assert sum(calls) == 2  # two windows
    seg.predict(NAMES)
    seg.predict(OTHER, bg_thresh=None)
    seg.predict(images[0].copy(), ["cat"])  # the same pixels by the one-call form: from the image cache
    assert sum(calls) == 2


def test_the_caches_are_bounded_least_recently_used_first(model, images, monkeypatch):
    seg = ovseg.Segmenter(model, small(), image_cache_size=2, text_cache_size=1)
    calls = counting(model, monkeypatch)
    for image in images:
        seg.predict(image, NAMES)
    assert len(seg.image_cache) == 2 and len(seg.text_cache) == 1
    seg.predict(images[2], NAMES)  # most recent: cached
    assert sum(calls) == 2 + 2 + 3  # windows encoded
    seg.predict(images[0], NAMES)  # dropped first
    assert sum(calls) == 2 + 2 + 3 + 2
    seg.predict(images[0], OTHER)
    assert list(seg.text_cache) == [(tuple(OTHER), seg.cfg.template)]


def test_the_set_image_outlives_the_cache_and_the_one_call_form(model, images, monkeypatch):
    seg = ovseg.Segmenter(model, small(), image_cache_size=0)
    seg.set_image(images[0])
    expected = seg.predict(NAMES).labels
    calls = counting(model, monkeypatch)
    seg.predict(images[1], NAMES)  # another image by the one-call form: the set image stays
    assert torch.equal(seg.predict(NAMES).labels, expected) and sum(calls) == 2


def test_changed_settings_re_encode_the_set_image(model, images):
    seg = ovseg.Segmenter(model, small())
    seg.set_image(images[0])
    seg.predict(NAMES)
    seg.cfg.flip = True
    flipped = ovseg.Segmenter(model, seg.cfg).predict(images[0], NAMES)
    assert torch.equal(seg.predict(NAMES).logits, flipped.logits)


def test_predict_batch_equals_predicting_one_by_one_in_fewer_passes(model, images, monkeypatch):
    alone = [ovseg.Segmenter(model, small()).predict(image, NAMES) for image in images]
    calls = counting(model, monkeypatch)
    batched = ovseg.Segmenter(model, small()).predict_batch(images, NAMES)
    assert calls == [2 + 2 + 3]  # all windows of the three photos in one forward pass
    for one, many in zip(alone, batched, strict=True):
        assert torch.equal(one.labels, many.labels) and one.class_names == many.class_names
        torch.testing.assert_close(one.logits, many.logits, rtol=1e-4, atol=1e-5)


def test_predict_before_set_image_and_after_reset_says_what_to_do(model, images):
    seg = ovseg.Segmenter(model, small())
    with pytest.raises(RuntimeError, match=r"no image is set: call set_image\(image\) before predict"):
        seg.predict(NAMES)
    seg.set_image(images[0])
    seg.reset_image()
    assert not seg.is_image_set and len(seg.image_cache) == 0
    with pytest.raises(RuntimeError, match="no image is set"):
        seg.predict(NAMES)
    with pytest.raises(TypeError, match=r"predict\(image, class_names\)"):
        seg.predict(images[0])


def test_an_unreadable_image_is_one_line(model, tmp_path):
    seg = ovseg.Segmenter(model, small())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    for image, needle in ((broken, "broken.jpg: not a readable image"), (tmp_path / "gone.png", "no such file"),
                          (np.zeros((4, 4, 2), np.uint8), "expected an (H, W, 3)")):
        with pytest.raises(ImageError) as error:
            seg.set_image(image)
        assert needle in str(error.value) and "\n" not in str(error.value)
    assert not seg.is_image_set


def test_list_presets_names_what_create_model_accepts():
    presets = ovseg.list_presets()
    assert presets == sorted(presets)
    assert {"tiny", "ovsegmentor/vit_b16_bert_8g", "ovsegmentor/vit_b16_bert_16g", "ovsegmentor/vit_s16_roberta",
            "test_voc12", "quickstart/stage1"} <= set(presets)
    assert all(ovseg.factory.preset_path(name).is_file() for name in presets)


def test_create_model_and_transforms_gives_the_segmenters_input(images):
    torch.manual_seed(0)
    model, preprocess = ovseg.create_model_and_transforms("tiny")
    x = preprocess(images[0])
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 3, 448, 599)  # 128 × 171 with its short side at 448
    seg = ovseg.Segmenter(model)
    text = seg.class_embeddings(NAMES)
    logits, _ = seg.class_logits(seg.encode_tensors([x])[0], text, seg.cfg.bg_thresh)
    assert torch.equal(labels_and_scores(logits, images[0].shape[:2])[0], seg.predict(images[0], NAMES).labels)


def test_create_model_and_transforms_from_a_saved_folder(model, tmp_path: Path):
    loaded, preprocess = ovseg.create_model_and_transforms(model.save_pretrained(tmp_path / "m"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                  strict=True))
    assert preprocess == ovseg.Preprocess(448, 2048, 16) and not loaded.training
