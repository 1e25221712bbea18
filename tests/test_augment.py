"""Training augmentation (spec §2.5): crops, RandAugment ops, erasing, drafted JPEG decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RAND_OPS,
    RandAugment,
    RandomCrop,
    RandomErasing,
    TrainTransform,
    normalize_0_1,
)
from ovseg.data.decode import decode_region
from ovseg.data.samples import SkippedSample
from ovseg.errors import ConfigError


def encoded(array: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def smooth_photo(height: int, width: int) -> np.ndarray:
    """A smooth colour gradient (JPEG-friendly, so decoders agree closely)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)], -1).astype(np.uint8)


def test_none_mode_is_the_normalised_centre_square():
    photo = smooth_photo(60, 90)
    out = TrainTransform(30, "none")(encoded(photo, "PNG"))
    expected = np.array(Image.fromarray(photo).resize((30, 30), Image.BILINEAR, box=(15, 0, 75, 60)))
    ref = torch.from_numpy(expected).permute(2, 0, 1).float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(out, ref / torch.tensor(IMAGENET_STD).view(3, 1, 1), atol=1e-5)


def test_paper_stage1_and_stage2_outputs():
    data = encoded(smooth_photo(120, 160))
    torch.manual_seed(0)
    stage1 = [TrainTransform(48, "paper", stage=1)(data) for _ in range(8)]
    stage2 = [TrainTransform(48, "paper", stage=2)(data) for _ in range(8)]
    for x in stage1 + stage2:
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert len({round(float(x.sum()), 3) for x in stage1}) == 8  # random crops, ops, erasing
    # stage 2 only crops and flips: pixels stay within the photo's colours
    lo, hi = normalize_0_1(torch.zeros(3, 1, 1)), normalize_0_1(torch.ones(3, 1, 1))
    assert all(((x >= lo - 1e-5) & (x <= hi + 1e-5)).all() for x in stage2)


def test_crop_boxes_follow_scale_and_ratio():
    crop = RandomCrop(scale=(0.4, 1.0))
    for _ in range(200):
        left, top, right, bottom = crop(200, 100)
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 100
        area = (right - left) * (bottom - top) / 20000
        ratio = (right - left) / (bottom - top)
        assert 0.39 <= area <= 1.0 and 3 / 4 - 0.02 <= ratio <= 4 / 3 + 0.02


def test_jpeg_is_decoded_in_draft_mode_close_to_a_full_decode():
    photo = smooth_photo(800, 1200)
    data = encoded(photo, quality=95)
    drafted = decode_region(data, lambda w, h: (0, 0, w, h), 100, "x")
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((100, 100), Image.BILINEAR))
    assert drafted.shape == (100, 100, 3) and np.abs(drafted.astype(int) - full).mean() < 2.0
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (150, 100))
    assert img.size == (150, 100)  # the 1/8 DCT scale that decode_region requests


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff not really", encoded(smooth_photo(64, 64))[:300]])
def test_unreadable_images_are_skipped_as_corrupt(data):
    with pytest.raises(SkippedSample) as e:
        TrainTransform(32, "paper")(data, "shard-0.tar:7")
    assert e.value.reason == "corrupt image" and "shard-0.tar:7" in str(e.value)


def test_transparent_pixels_become_white():
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent black
    out = decode_region(encoded(rgba, "PNG"), lambda w, h: (0, 0, w, h), 8, "x")
    assert (out == 255).all()


@pytest.mark.parametrize("name", list(RAND_OPS))
def test_every_randaugment_op_keeps_shape_and_range_and_acts_per_sample(name):
    torch.manual_seed(1)
    x = torch.rand(4, 3, 24, 24)
    y = RAND_OPS[name](x, torch.full((4,), 0.9)).clamp(0, 1)
    assert y.shape == x.shape and (y >= 0).all() and (y <= 1).all()
    assert not torch.equal(x, y)


def test_randaugment_semantics():
    x = torch.rand(6, 3, 16, 16)
    assert torch.equal(RandAugment(prob=0.0)(x), x)
    grey = torch.full((1, 3, 8, 8), 0.5)
    assert torch.allclose(RAND_OPS["brightness"](grey, torch.zeros(1)), grey)  # factor 1 at level 0
    assert torch.allclose(RAND_OPS["invert"](grey, torch.zeros(1)), grey)
    solarized = RAND_OPS["solarize"](torch.tensor([0.2, 0.8]).view(1, 1, 1, 2), torch.tensor([0.5]))
    assert torch.allclose(solarized, torch.tensor([0.2, 0.2]).view(1, 1, 1, 2))  # inverted from 1 - level up
    torch.manual_seed(0)
    out = RandAugment(prob=1.0)(x.clone())
    changed = [(out[i] != x[i]).any().item() for i in range(6)]
    assert sum(changed) >= 5  # every sample draws its own ops


def test_random_erasing_fills_a_region_with_noise():
    torch.manual_seed(0)
    x = torch.zeros(64, 3, 32, 32)
    erased = (RandomErasing(p=1.0)(x) != 0).float().mean((1, 2, 3))
    assert ((erased > 0.01) & (erased < 0.34)).all()
    assert torch.equal(RandomErasing(p=0.0)(x), x)
    assert 8 <= int(((RandomErasing(p=0.25)(x) != 0).flatten(1).any(1)).sum()) <= 24  # p 0.25 of 64


def test_an_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="data.augment: expected one of paper, none, got 'timm'"):
        TrainTransform(32, "timm")


def test_normalizers_are_named_by_their_input_range():
    """normalize_0_1 (training, input in [0, 1]) and normalize_0_255 (evaluation, input in [0, 255]) agree."""
    from ovseg.images import normalize_0_255

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(normalize_0_1(mean), torch.zeros(3, 1, 1), atol=1e-6)
    assert torch.allclose(normalize_0_255(mean * 255), torch.zeros(3, 1, 1), atol=1e-5)
    x = torch.rand(3, 4, 5)
    assert torch.allclose(normalize_0_1(x), normalize_0_255(x * 255), atol=1e-5)
