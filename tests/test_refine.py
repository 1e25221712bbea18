"""Colour-affinity refinement (evaluate.seg.refine: pamr | pamr-local)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import ovseg
from ovseg.errors import ConfigError
from ovseg.inference.refine import (
    DEFAULT_DILATIONS,
    RefineSettings,
    local_affinity,
    neighbour_offsets,
    pamr_affinity,
    refine_masks,
)


def two_regions(height: int = 32, width: int = 40, edge: int = 23) -> torch.Tensor:
    """A red region left of column ``edge`` and a blue one right of it, with a little noise."""
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    image[0, :, :edge] = 1.0
    image[2, :, edge:] = 1.0
    return image + 0.02 * torch.randn_like(image)


def seg_section(**values) -> OmegaConf:
    seg = ovseg.load_config().evaluate.seg
    seg.merge_with(values)
    return seg


# --- TCL's PAMR against a direct transcription of the published formula --------------------------------------


def direct_pamr(image: torch.Tensor, masks: torch.Tensor, dilations, iterations: int = 10, t: float = 0.1):
    """PAMR written out pixel by pixel in double precision: for each dilation d the 3×3 grid at offset d, edges
    replicated (clamped coordinates); σ per channel = sample std of the grids of all dilations (centre included);
    affinity = softmax over the 8 neighbours of every dilation of -mean_c |I(p) - I(q)| / (1e-8 + t·σ);
    then ``iterations`` times mask(p) <- Σ_q affinity(p, q) · mask(q). Returns (affinity, refined)."""
    channels, height, width = image.shape
    img, m = image.double().tolist(), masks.double().tolist()

    def at(plane, y, x):
        return plane[min(max(y, 0), height - 1)][min(max(x, 0), width - 1)]

    grids = [[(dy * d, dx * d) for dy in (-1, 0, 1) for dx in (-1, 0, 1)] for d in dilations]
    neighbours = [o for grid in grids for o in grid if o != (0, 0)]
    affinity = [[[0.0] * width for _ in range(height)] for _ in neighbours]
    for y in range(height):
        for x in range(width):
            sigma = [
                statistics.stdev(at(img[c], y + dy, x + dx) for grid in grids for dy, dx in grid)
                for c in range(channels)
            ]
            logits = [
                sum(-abs(img[c][y][x] - at(img[c], y + dy, x + dx)) / (1e-8 + t * sigma[c]) for c in range(channels))
                / channels
                for dy, dx in neighbours
            ]
            top = max(logits)
            total = sum(math.exp(v - top) for v in logits)
            for j, v in enumerate(logits):
                affinity[j][y][x] = math.exp(v - top) / total
    for _ in range(iterations):
        m = [
            [
                [
                    sum(affinity[j][y][x] * at(plane, y + dy, x + dx) for j, (dy, dx) in enumerate(neighbours))
                    for x in range(width)
                ]
                for y in range(height)
            ]
            for plane in m
        ]
    return torch.tensor(affinity, dtype=torch.float64), torch.tensor(m, dtype=torch.float64)


@pytest.mark.parametrize("dilations", [(1, 2), DEFAULT_DILATIONS])
def test_reference_pamr_equals_the_published_formula(dilations):
    torch.manual_seed(3)
    image = torch.rand(3, 9, 11)
    image[:, :, 6:] += 1.0  # an edge, so the affinities are far from uniform
    masks = torch.rand(2, 9, 11)
    want_affinity, want_masks = direct_pamr(image, masks, dilations)
    affinity = pamr_affinity(image, dilations)
    torch.testing.assert_close(affinity.double(), want_affinity, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        refine_masks(image, masks, 10, dilations, affinity).double(), want_masks, atol=1e-5, rtol=0
    )
    assert float(affinity.max()) > 5 / affinity.shape[0]  # not a uniform average: the test can fail
    settings = RefineSettings.from_config(seg_section(refine="pamr", refine_dilations=list(dilations)))
    torch.testing.assert_close(settings.refine(image, masks).double(), want_masks, atol=1e-5, rtol=0)


# --- pamr-local: ovseg's earlier variant, unchanged ------------------------------------------------------------


def local_affinity_before(image: torch.Tensor, dilations=DEFAULT_DILATIONS, temperature: float = 0.3):
    """neighbour_affinity as it was before TCL's PAMR was added (σ from the pixel's own 3×3 neighbourhood)."""
    size, pad = image.shape[-2:], max(dilations)

    def shifted(padded, p, offset):
        return padded[..., p + offset[0] : p + offset[0] + size[0], p + offset[1] : p + offset[1] + size[1]]

    def padded(p):
        return F.pad(image.unsqueeze(0), (p, p, p, p), mode="replicate").squeeze(0)

    offsets = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    ring = [shifted(padded(1), 1, (dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    sigma = torch.stack([image, *ring]).std(dim=0)
    scale = 1.0 / (temperature * sigma + 1e-8)
    far = padded(pad)
    kernel = torch.stack([-((image - shifted(far, pad, o)).abs() * scale).mean(dim=0) for o in offsets])
    return kernel.softmax(dim=0)


def test_local_variant_is_unchanged(photos):
    image = torch.from_numpy(photos["coffee"][100:160, 200:280]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(local_affinity(image), local_affinity_before(image))
    masks = torch.rand(3, 60, 80)
    settings = RefineSettings.from_config(seg_section(refine="pamr-local"))
    assert (settings.temperature, settings.dilations) == (0.3, DEFAULT_DILATIONS)
    want = refine_masks(image, masks, 10, affinity=local_affinity_before(image))
    torch.testing.assert_close(settings.refine(image, masks), want)
    assert not torch.allclose(pamr_affinity(image), local_affinity(image), atol=1e-3)  # two different variants


# --- what both variants do -----------------------------------------------------------------------------------


@pytest.mark.parametrize("affinity_of", [pamr_affinity, local_affinity])
def test_affinity_is_a_distribution_over_neighbours_that_avoids_other_colours(affinity_of):
    image = two_regions()
    affinity = affinity_of(image, dilations=(1, 2))
    assert affinity.shape == (16, 32, 40)
    torch.testing.assert_close(affinity.sum(0), torch.ones(32, 40))
    # pixel (10, 21): its right neighbours at distance 2 lie across the edge (column 23), the left ones do not
    offsets = neighbour_offsets((1, 2))
    across = affinity[offsets.index((0, 2)), 10, 21]
    same = affinity[offsets.index((0, -2)), 10, 21]
    assert across < 0.01 * same


@pytest.mark.parametrize("variant", ["pamr", "pamr-local"])
def test_refinement_keeps_a_uniform_map_and_moves_a_blocky_edge_to_the_colour_edge(variant):
    image = two_regions()
    settings = RefineSettings.from_config(seg_section(refine=variant))
    flat = torch.full((2, 32, 40), 0.5)
    torch.testing.assert_close(settings.refine(image, flat), flat)
    blocky = torch.zeros(2, 32, 40)
    blocky[0, :, :16] = 1.0  # class 0 stops 7 pixels short of the red region's edge (column 23)
    blocky[1, :, 16:] = 1.0
    truth = torch.zeros(32, 40, dtype=torch.long)
    truth[:, 23:] = 1
    before = (blocky.argmax(0) == truth).float().mean()
    after = (settings.refine(image, blocky).argmax(0) == truth).float().mean()
    assert before < 0.85
    assert after > 0.99


def test_refinement_refuses_masks_of_another_size_or_affinities_of_other_dilations():
    with pytest.raises(ValueError, match="differ in size"):
        refine_masks(torch.zeros(3, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match=r"affinity has 16 neighbours, dilations \(1, 2, 4\) give 24"):
        refine_masks(torch.zeros(3, 8, 8), torch.zeros(2, 8, 8), 1, (1, 2, 4), torch.zeros(16, 8, 8))


def test_settings_resolve_each_variants_temperature_and_refuse_bad_values():
    assert RefineSettings.from_config(seg_section(refine="pamr")) == RefineSettings("pamr", 10, 0.1, DEFAULT_DILATIONS)
    assert RefineSettings.from_config(
        seg_section(refine="pamr-local", refine_temperature=0.2, refine_iterations=3, refine_dilations=[1, 3])
    ) == RefineSettings("pamr-local", 3, 0.2, (1, 3))
    with pytest.raises(ConfigError, match=r"^evaluate.seg.refine_dilations: expected positive integers, got \[0, 2\]$"):
        RefineSettings.from_config(seg_section(refine="pamr", refine_dilations=[0, 2]))
    with pytest.raises(ConfigError, match=r"^evaluate.seg.refine_temperature: expected a positive number, got 0.0$"):
        RefineSettings.from_config(seg_section(refine="pamr", refine_temperature=0))
    with pytest.raises(
        ConfigError,
        match=r"evaluate.seg.refine': Invalid value 'crf', expected one of "
        r"\['none', 'pamr', 'pamr-local'\]",
    ):
        ovseg.load_config(None, ["evaluate.seg.refine=crf"])


def test_segmenter_refines_only_when_asked_and_with_the_variant_asked(tiny_checkpoint, photos):
    model, _ = ovseg.load_model(tiny_checkpoint)
    names = ["cat", "dog", "sky"]
    cfg = ovseg.load_config().evaluate.seg
    plain = ovseg.Segmenter(model, cfg).predict(photos["coffee"], names)
    cfg.refine = "pamr"
    segmenter = ovseg.Segmenter(model, cfg)
    refined = segmenter.predict(photos["coffee"], names)
    assert refined.labels.shape == plain.labels.shape
    assert not torch.equal(refined.logits, plain.logits)
    segmenter.cfg.refine_iterations = 1  # same image (cached encoding), other setting: refined again
    once = segmenter.predict(photos["coffee"], names)
    assert not torch.equal(once.logits, refined.logits)
    segmenter.cfg.refine = "pamr-local"  # same image, other variant: its own affinities, as a fresh segmenter's
    local = segmenter.predict(photos["coffee"], names)
    fresh = ovseg.Segmenter(model, OmegaConf.merge(cfg, {"refine": "pamr-local", "refine_iterations": 1}))
    torch.testing.assert_close(local.logits, fresh.predict(photos["coffee"], names).logits)
    assert not torch.allclose(local.logits, once.logits)


def test_refining_the_window_group_maps_equals_refining_the_averaged_class_maps():
    """The segmenter refines the (window, group) maps once and mixes them per vocabulary (linearity): the
    same class maps as refining the window-averaged ones, windows overlapping."""
    from ovseg.inference.slide import ImageEncoding, average_window_logits, window_group_basis

    torch.manual_seed(1)
    maps = torch.randint(0, 4, (2, 24, 30), dtype=torch.uint8)
    enc = ImageEncoding(
        size=(24, 40),
        boxes=[(0, 24, 0, 30), (0, 24, 10, 40)],
        grid=(3, 4),
        soft=torch.zeros(2, 1, 4, 12),
        group_maps=maps,
        group_emb=torch.zeros(2, 4, 3),
        image_emb=torch.zeros(2, 3),
        image=torch.rand(3, 24, 40),
    )
    tables = torch.rand(2, 4, 5)
    basis = window_group_basis(enc)
    mixed = torch.einsum("mhw,mc->chw", basis, tables.reshape(8, 5))
    torch.testing.assert_close(mixed, average_window_logits(enc, tables)[0])
    refined = torch.einsum("mhw,mc->chw", refine_masks(enc.image, basis), tables.reshape(8, 5))
    torch.testing.assert_close(refined, refine_masks(enc.image, average_window_logits(enc, tables)[0]))


def test_scene_harness_takes_the_scoring_settings_and_fixes_the_geometry():
    from ovseg.engine.validate import scene_seg_config

    seg = seg_section(
        top_k=3, refine="pamr", refine_iterations=4, refine_dilations=[1, 2], template="full", crop_size=999
    )
    cfg = scene_seg_config(64, seg)
    assert (cfg.top_k, cfg.refine, cfg.refine_iterations, cfg.template) == (3, "pamr", 4, "full")
    assert list(cfg.refine_dilations) == [1, 2]
    assert (cfg.mode, cfg.crop_size, cfg.short_side) == ("whole", 64, 64)
