"""The crop-box sampler of RandomResizedCrop: the distribution kornia's generator drew before it, cheaper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.augmentation.random_generator import ResizedCropGenerator

from ovseg.data.augment import RandomCrop

WIDTH, HEIGHT, DRAWS = 320, 240, 20000


def stats(boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Area fraction, aspect (w / h) and offsets as fractions of the free range, per box."""
    left, top, w, h = boxes.T
    return {
        "area": w * h / (WIDTH * HEIGHT),
        "aspect": w / h,
        "left": left / np.maximum(WIDTH - w, 1),
        "top": top / np.maximum(HEIGHT - h, 1),
    }


def kornia_boxes(scale: tuple[float, float]) -> np.ndarray:
    generator = ResizedCropGenerator((224, 224), scale=scale, ratio=(3 / 4, 4 / 3))
    generator.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
    src = generator(torch.Size([DRAWS, 3, HEIGHT, WIDTH]))["src"]  # corners, inclusive pixels
    x0, y0, x1, y1 = src[:, 0, 0], src[:, 0, 1], src[:, 2, 0], src[:, 2, 1]
    return torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).double().numpy()


def our_boxes(scale: tuple[float, float]) -> np.ndarray:
    crop = RandomCrop(scale)
    boxes = np.array([crop(WIDTH, HEIGHT) for _ in range(DRAWS)], dtype=np.float64)
    assert (boxes == boxes.round()).all()  # whole pixels
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.4, 1.0)])
def test_boxes_are_distributed_as_kornias_generator_drew_them(scale):
    torch.manual_seed(0)
    ours, theirs = stats(our_boxes(scale)), stats(kornia_boxes(scale))
    for name in ours:
        # 20 000 draws each: standard errors of the means ~0.003 (0.002 for the aspect)
        assert abs(ours[name].mean() - theirs[name].mean()) < 0.015, name
        quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
        assert np.allclose(np.quantile(ours[name], quantiles), np.quantile(theirs[name], quantiles), atol=0.03), name
    assert abs(ours["aspect"].mean() - theirs["aspect"].mean()) < 0.008  # log-uniform, not uniform (+0.028)
    w, h = our_boxes(scale)[:, 2:].T
    assert (w * h >= scale[0] * WIDTH * HEIGHT * 0.97).all() and (w <= WIDTH).all() and (h <= HEIGHT).all()


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [(1000, 10, (493, 0, 506, 10)), (10, 1000, (0, 493, 10, 506))],  # 13 = round(10 · 4/3), 10 / 0.75
)
def test_no_box_fits_an_extreme_aspect_image_so_the_centre_crop_is_taken(width, height, box):
    crop = RandomCrop((0.08, 1.0))
    assert {crop(width, height) for _ in range(20)} == {box}


def test_a_seed_of_torchs_generator_fixes_the_boxes():
    crop = RandomCrop((0.08, 1.0))
    torch.manual_seed(5)
    first = [crop(300, 200) for _ in range(50)]
    torch.manual_seed(5)
    assert [crop(300, 200) for _ in range(50)] == first
    assert len(set(first)) == 50
