"""One inference path: the Segmenter and the evaluation harness give identical label maps for every
background mode × scoring × refinement, because both call the same window encoding and per-class decision."""

from __future__ import annotations

import itertools

import pytest
import torch

import ovseg
from ovseg.config import load_config
from ovseg.evaluation.datasets import Sample
from ovseg.evaluation.predictor import HarnessPredictor
from ovseg.factory import preset_path
from ovseg.inference.preprocess import prepare_image


@pytest.fixture(scope="module")
def model() -> ovseg.OVSegmentor:
    """One grouping block and nothing after it (patch scoring), with a learned background embedding."""
    torch.manual_seed(0)
    cfg = load_config(preset_path("tiny"), ["model.img_encoder.depths=[2,0]", "model.learned_background=true",
                                            "model.img_encoder.segment_values=stem"])
    return ovseg.create_model(cfg).eval()


@pytest.mark.parametrize("background, scoring, refine",
                         list(itertools.product(["threshold", "learned"], ["groups", "patches"], ["none", "pamr"])))
def test_segmenter_and_harness_give_identical_label_maps(model, photos, background, scoring, refine):
    image, names = photos["coffee"][100:260, 150:390], ["cup", "table", "spoon", "saucer"]
    cfg = ovseg.load_config().evaluate.seg
    cfg.merge_with({"background": background, "scoring": scoring, "refine": refine, "refine_iterations": 3,
                    "short_side": 112, "crop_size": 96, "stride": 64, "bg_thresh": 0.5})
    segmenter = ovseg.Segmenter(model, cfg)
    alone = segmenter.predict(image, names)
    tensor = prepare_image(image, cfg.short_side, cfg.max_long_side, model.cfg.img_encoder.patch_size)
    sample = Sample(name="coffee", image=tensor, size=image.shape[:2], label=torch.zeros(image.shape[:2]))
    other = Sample(name="other", image=tensor[..., :96, :80], size=(60, 50), label=torch.zeros(60, 50))
    harness = HarnessPredictor(segmenter, names, cfg.bg_thresh)([other, sample])[1]  # batched with another
    assert torch.equal(harness, alone.labels)
    if background == "learned":  # the learned background class is channel 0, as a thresholded one would be
        assert alone.class_names[0] == "background" and len(alone.present()) > 1
