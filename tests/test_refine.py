"""Colour-affinity refinement (evaluate.seg.refine: pamr)."""

from __future__ import annotations

import pytest
import torch

import ovseg
from ovseg.errors import ConfigError
from ovseg.inference.refine import neighbour_affinity, refine_masks


def two_regions(height: int = 32, width: int = 40, edge: int = 23) -> torch.Tensor:
    """A red region left of column ``edge`` and a blue one right of it, with a little noise."""
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    image[0, :, :edge] = 1.0
    image[2, :, edge:] = 1.0
    return image + 0.02 * torch.randn_like(image)


def test_affinity_is_a_distribution_over_neighbours_that_avoids_other_colours():
    image = two_regions()
    affinity = neighbour_affinity(image, dilations=(1, 2))
    assert affinity.shape == (16, 32, 40)
    torch.testing.assert_close(affinity.sum(0), torch.ones(32, 40))
    # pixel (10, 21): its right neighbours at distance 2 lie across the edge (column 23), the left ones do not
    offsets = [(dy * d, dx * d) for d in (1, 2) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    across = affinity[offsets.index((0, 2)), 10, 21]
    same = affinity[offsets.index((0, -2)), 10, 21]
    assert across < 0.01 * same


def test_refinement_keeps_a_uniform_map_and_moves_a_blocky_edge_to_the_colour_edge():
    image = two_regions()
    flat = torch.full((2, 32, 40), 0.5)
    torch.testing.assert_close(refine_masks(image, flat), flat)
    blocky = torch.zeros(2, 32, 40)
    blocky[0, :, :16] = 1.0  # class 0 stops 7 pixels short of the red region's edge (column 23)
    blocky[1, :, 16:] = 1.0
    truth = torch.zeros(32, 40, dtype=torch.long)
    truth[:, 23:] = 1
    before = (blocky.argmax(0) == truth).float().mean()
    after = (refine_masks(image, blocky, iterations=10).argmax(0) == truth).float().mean()
    assert before < 0.85
    assert after > 0.99


def test_refinement_refuses_masks_of_another_size():
    with pytest.raises(ValueError, match="differ in size"):
        refine_masks(torch.zeros(3, 8, 8), torch.zeros(2, 8, 9))


def test_segmenter_refines_only_when_asked(tiny_checkpoint, photos):
    model, _ = ovseg.load_model(tiny_checkpoint)
    cfg = ovseg.load_config().evaluate.seg
    plain = ovseg.Segmenter(model, cfg).predict(photos["coffee"], ["cat", "dog", "sky"])
    cfg.refine = "pamr"
    segmenter = ovseg.Segmenter(model, cfg)
    refined = segmenter.predict(photos["coffee"], ["cat", "dog", "sky"])
    assert refined.labels.shape == plain.labels.shape
    assert not torch.equal(refined.logits, plain.logits)
    segmenter.cfg.refine_iterations = 1  # same image (cached encoding), other setting: refined again
    once = segmenter.predict(photos["coffee"], ["cat", "dog", "sky"])
    assert not torch.equal(once.logits, refined.logits)
    with pytest.raises(ConfigError, match=r"evaluate.seg.refine': Invalid value 'crf', expected one of "
                       r"\['none', 'pamr'\]"):
        ovseg.load_config(None, ["evaluate.seg.refine=crf"])


def test_refining_the_window_group_maps_equals_refining_the_averaged_class_maps():
    """The segmenter refines the (window, group) maps once and mixes them per vocabulary (linearity): the
    same class maps as refining the window-averaged ones, windows overlapping."""
    from ovseg.inference.slide import ImageEncoding, average_window_logits, window_group_basis

    torch.manual_seed(1)
    maps = torch.randint(0, 4, (2, 24, 30), dtype=torch.uint8)
    enc = ImageEncoding(size=(24, 40), boxes=[(0, 24, 0, 30), (0, 24, 10, 40)], grid=(3, 4),
                        soft=torch.zeros(2, 1, 4, 12), group_maps=maps, group_emb=torch.zeros(2, 4, 3),
                        image_emb=torch.zeros(2, 3), image=torch.rand(3, 24, 40))
    tables = torch.rand(2, 4, 5)
    basis = window_group_basis(enc)
    mixed = torch.einsum("mhw,mc->chw", basis, tables.reshape(8, 5))
    torch.testing.assert_close(mixed, average_window_logits(enc, tables)[0])
    refined = torch.einsum("mhw,mc->chw", refine_masks(enc.image, basis), tables.reshape(8, 5))
    torch.testing.assert_close(refined, refine_masks(enc.image, average_window_logits(enc, tables)[0]))


def test_scene_harness_takes_the_scoring_settings_and_fixes_the_geometry():
    from ovseg.engine.validate import scene_seg_config

    seg = ovseg.load_config().evaluate.seg
    seg.merge_with({"top_k": 3, "refine": "pamr", "refine_iterations": 4, "template": "full", "crop_size": 999})
    cfg = scene_seg_config(64, seg)
    assert (cfg.top_k, cfg.refine, cfg.refine_iterations, cfg.template) == (3, "pamr", 4, "full")
    assert (cfg.mode, cfg.crop_size, cfg.short_side) == ("whole", 64, 64)
