"""Pictures of predictions: palettes, overlays, class names, legends, group maps (numpy + PIL only)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ovseg.inference.segmenter import composed_group_maps
from ovseg.viz import (
    add_legend,
    blend,
    class_palette,
    colorize,
    draw_class_names,
    group_palette,
    overlay_labels,
    region_anchors,
    render_groups,
)
from ovseg.viz import overlay as overlay_module


def test_class_palette_is_voc_then_distinct():
    palette = class_palette(300)
    assert palette[0].tolist() == [0, 0, 0]  # background
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]  # VOC aeroplane, person
    assert len({tuple(c) for c in palette.tolist()}) == 300  # every class its own colour, the last one too


def test_group_palette_distinct():
    colours = group_palette(64)
    assert colours.shape == (64, 3) and len({tuple(c) for c in colours.tolist()}) == 64


def test_colorize_fast_path_equals_indexing():
    labels = np.random.default_rng(0).integers(0, 21, (37, 53)).astype(np.uint8)
    palette = class_palette(21)
    assert np.array_equal(colorize(labels, palette), palette[labels])
    assert np.array_equal(colorize(labels.astype(np.int64), palette), palette[labels])


def test_overlay_leaves_background_untouched_and_bands_agree(monkeypatch, photos):
    image = photos["coffee"]
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[100:300, 200:500] = 3
    out = overlay_labels(image, labels, class_palette(4))
    assert np.array_equal(out[labels == 0], image[labels == 0])
    expected = (image[labels == 3].astype(int) + class_palette(4)[3].astype(int) + 1) // 2
    assert np.abs(out[labels == 3].astype(int) - expected).max() <= 1
    monkeypatch.setattr(overlay_module, "BAND_PIXELS", 1000)  # many small bands: same picture
    assert np.array_equal(overlay_labels(image, labels, class_palette(4)), out)
    assert np.array_equal(blend(image, image), image)


def test_region_anchor_lies_inside_a_ring():
    yy, xx = np.mgrid[:200, :200]
    radius = np.hypot(yy - 100, xx - 100)
    labels = ((radius > 60) & (radius < 90)).astype(np.uint8)  # the centroid is outside the region
    (x, y), = region_anchors(labels).values()
    assert labels[y, x] == 1


def test_names_and_legend(photos):
    image = Image.fromarray(photos["astronaut"])
    labels = np.zeros((512, 512), np.uint8)
    labels[:256] = 1
    named = draw_class_names(image, region_anchors(labels), ["background", "person"])
    assert named.size == image.size and not np.array_equal(np.asarray(named), np.asarray(image))
    legend = add_legend(named, [("person", (192, 128, 128), 0.5), ("a very long class name", (0, 0, 128), 0.1)])
    assert legend.width == 512 and legend.height > 512
    assert np.array_equal(np.asarray(legend)[:512], np.asarray(named))
    tiny = Image.fromarray(photos["astronaut"][:10, :12])
    assert draw_class_names(tiny, {1: (5, 5)}, ["background", "person"]).size == (12, 10)
    assert add_legend(tiny, []) is tiny and add_legend(tiny, [("person", (1, 2, 3), 1.0)]).width > 12


def test_render_groups_resizes_to_the_photo(photos):
    image = photos["chelsea"]
    groups = np.arange(8, dtype=np.uint8).repeat(4).reshape(4, 8)
    out = render_groups(image, groups)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_composed_group_maps_chain_blocks():
    soft0 = torch.eye(4)[torch.tensor([0, 1, 2, 3, 0, 1])].t().reshape(1, 1, 4, 6)  # 6 patches (2×3) -> 4 groups
    soft1 = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]]).reshape(1, 1, 2, 4)  # 4 groups -> 2
    first, second = composed_group_maps([soft0, soft1], (2, 3), (2, 3))
    assert first.tolist() == [[0, 1, 2], [3, 0, 1]]
    assert second.tolist() == [[0, 1, 0], [1, 0, 1]]
