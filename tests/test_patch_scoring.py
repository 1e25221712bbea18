"""Patch scoring (evaluate.seg.scoring: patches): every patch scored as a one-patch segment of its group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ovseg
from ovseg.config import load_config
from ovseg.errors import ConfigError, OvsegError
from ovseg.factory import preset_path


@pytest.mark.parametrize("residual", [False, True])
def test_a_patch_segment_is_its_group_when_all_the_groups_patches_are_alike(residual):
    """Per-patch features are defined as 'the group, had all its patches been like this one': give every
    patch its group's value and each patch's features equal its group's segment token."""
    from ovseg.model.grouping import GroupingBlock

    torch.manual_seed(0)
    block = GroupingBlock(16, 16, num_heads=2, num_group_token=6, num_output_group=3,
                          group_token_residual=residual).eval()
    x, tokens = torch.randn(2, 12, 16), torch.randn(2, 6, 16)
    with torch.no_grad():
        hard = block(x, tokens)[1].hard.squeeze(1)  # (B, G, N)
        values = hard.transpose(1, 2) @ torch.randn(2, 3, 16)  # each patch: its group's vector
        segments, assignment = block(x, tokens, values, per_patch=True)
    assert torch.equal(assignment.hard.squeeze(1), hard)  # the values do not move the grouping
    own_group = hard.argmax(dim=1)  # (B, N)
    expected = torch.stack([segments[b, own_group[b]] for b in range(2)])
    torch.testing.assert_close(assignment.patch_tokens, expected, atol=1e-5, rtol=1e-5)


def test_per_patch_features_come_from_the_same_pass_and_need_nothing_after_the_grouping():
    from ovseg.model.vision import GroupViT

    kwargs = dict(img_size=32, patch_size=8, embed_dim=32, num_heads=[2, 2], num_group_tokens=[4, 0],
                  num_output_groups=[2], segment_values="stem", group_token_residual=False)
    torch.manual_seed(0)
    model = GroupViT(depths=[1, 0], **kwargs).eval()
    image = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        plain, dense = model(image), model(image, per_patch=True)
    assert plain.patch_tokens is None and dense.patch_tokens.shape == (2, 4 * 5, 32)
    assert torch.equal(plain.tokens, dense.tokens) and torch.equal(plain.pooled, dense.pooled)
    assert not GroupViT(depths=[1, 1], **kwargs).supports_patch_tokens
    with pytest.raises(ValueError, match="per-patch segments need one grouping block"):
        GroupViT(depths=[1, 1], **kwargs)(image, per_patch=True)


def test_overlapping_windows_average_their_resized_patch_grids():
    from ovseg.inference.slide import ImageEncoding, average_patch_logits

    enc = ImageEncoding(size=(16, 24), boxes=[(0, 16, 0, 16), (0, 16, 8, 24)], grid=(2, 2),
                        soft=torch.zeros(2, 1, 4, 4), group_maps=torch.zeros(2, 16, 16, dtype=torch.uint8),
                        group_emb=torch.zeros(2, 4, 3), image_emb=torch.zeros(2, 3))
    tables = torch.tensor([1.0, 3.0]).view(2, 1, 1).expand(2, 4, 2)  # window k: the value 1 or 3 everywhere
    logits = average_patch_logits(enc, tables)
    assert logits.shape == (2, 16, 24)
    assert (logits[:, :, :8] == 1).all() and (logits[:, :, 8:16] == 2).all() and (logits[:, :, 16:] == 3).all()
    one = torch.zeros(1, 4, 1)
    one[0, 0] = 1.0  # the top-left patch of one window: bilinear, so its score fades towards the others
    single = ImageEncoding(size=(16, 16), boxes=[(0, 16, 0, 16)], grid=(2, 2), soft=torch.zeros(1, 1, 4, 4),
                           group_maps=torch.zeros(1, 16, 16, dtype=torch.uint8), group_emb=torch.zeros(1, 4, 3),
                           image_emb=torch.zeros(1, 3))
    faded = average_patch_logits(single, one)[0]
    assert faded[0, 0] == 1 and faded[15, 15] == 0 and 0 < faded[7, 7] < 1


def dense_model() -> ovseg.OVSegmentor:
    torch.manual_seed(0)
    cfg = load_config(preset_path("tiny"), ["model.img_encoder.depths=[2,0]",
                                            "model.img_encoder.segment_values=stem"])
    return ovseg.create_model(cfg).eval()


def test_segmenter_scores_patches_when_asked_and_keeps_the_groups_apart(photos):
    model = dense_model()
    cfg = ovseg.load_config().evaluate.seg
    groups = ovseg.Segmenter(model, cfg).predict(photos["coffee"], ["cup", "table", "spoon"])
    cfg.scoring = "patches"
    segmenter = ovseg.Segmenter(model, cfg)
    patches = segmenter.predict(photos["coffee"], ["cup", "table", "spoon"])
    assert patches.labels.shape == groups.labels.shape == photos["coffee"].shape[:2]
    assert not torch.equal(patches.logits, groups.logits)
    assert torch.equal(patches.group_maps, groups.group_maps)  # the learned groups are still shown
    segmenter.cfg.scoring = "groups"  # the same image again: its cached encoding serves the groups too
    again = segmenter.predict(photos["coffee"], ["cup", "table", "spoon"])
    torch.testing.assert_close(again.logits, groups.logits)
    plain = ovseg.Segmenter(model, ovseg.load_config().evaluate.seg)
    plain.predict(photos["coffee"], ["cup"])  # cached without patches ...
    plain.cfg.scoring = "patches"  # ... so encoded again when patches are asked for
    torch.testing.assert_close(plain.predict(photos["coffee"], ["cup", "table", "spoon"]).logits, patches.logits)
    segmenter.cfg.merge_with({"scoring": "patches", "refine": "pamr"})
    refined = segmenter.predict(photos["coffee"], ["cup", "table", "spoon"])
    assert refined.labels.shape == groups.labels.shape and not torch.equal(refined.logits, patches.logits)


def test_batched_harness_scores_patches_like_the_segmenter(photos):
    from ovseg.evaluation.datasets import Sample
    from ovseg.evaluation.predictor import HarnessPredictor
    from ovseg.inference.preprocess import prepare_image

    model = dense_model()
    cfg = ovseg.load_config().evaluate.seg
    cfg.scoring = "patches"
    segmenter = ovseg.Segmenter(model, cfg)
    names = ["cup", "table", "spoon"]
    image = photos["coffee"]
    tensor = prepare_image(image, cfg.short_side, cfg.max_long_side, model.cfg.img_encoder.patch_size)
    sample = Sample(name="coffee", image=tensor, size=image.shape[:2], label=torch.zeros(image.shape[:2]))
    batched = HarnessPredictor(segmenter, names, cfg.bg_thresh)([sample])[0]
    assert torch.equal(batched, segmenter.predict(image, names).labels)


def test_patch_scoring_on_a_model_with_blocks_after_the_grouping_is_one_line(tiny_checkpoint):
    model, _ = ovseg.load_model(tiny_checkpoint)  # depths [2, 2]
    cfg = ovseg.load_config().evaluate.seg
    cfg.scoring = "patches"
    with pytest.raises(OvsegError, match=r"scoring=patches needs one grouping block .* has depths \[2, 2\]"):
        ovseg.Segmenter(model, cfg)
    with pytest.raises(ConfigError, match=r"evaluate.seg.scoring': Invalid value 'pixels', expected one of "
                       r"\['groups', 'patches'\]"):  # the schema's list, when the config is loaded
        ovseg.load_config(None, ["evaluate.seg.scoring=pixels"])


@pytest.mark.parametrize("scoring", ["patches", "groups"])
def test_flip_averages_the_image_and_its_mirror_image(photos, scoring):
    """flip: each window is also segmented mirrored and the two are averaged, so the class maps are the mean
    of the image's and of its mirror image's (mirrored back); the batched harness gives the same labels."""
    from ovseg.evaluation.datasets import Sample
    from ovseg.evaluation.predictor import HarnessPredictor
    from ovseg.inference.preprocess import prepare_image

    model, image, names = dense_model(), photos["astronaut"][:200, :300], ["person", "flag", "sky"]
    cfg = ovseg.load_config().evaluate.seg
    cfg.merge_with({"scoring": scoring, "short_side": 128, "crop_size": 96, "stride": 96})  # x: mirror-symmetric
    plain = ovseg.Segmenter(model, cfg).predict(image, names).logits
    mirror = ovseg.Segmenter(model, cfg).predict(image[:, ::-1], names).logits.flip(-1)
    cfg.flip = True
    segmenter = ovseg.Segmenter(model, cfg)
    flipped = segmenter.predict(image, names)
    assert len(flipped.boxes) == 2 * 4  # 4 windows, each also mirrored
    if scoring == "patches":  # linear all the way: exactly the mean
        torch.testing.assert_close(flipped.logits, (plain + mirror) / 2, atol=1e-5, rtol=1e-5)
    else:  # argmax groups of a mirrored bilinear map may differ on ties only
        assert ((flipped.logits - (plain + mirror) / 2).abs() > 1e-4).float().mean() < 0.01
    tensor = prepare_image(image, cfg.short_side, cfg.max_long_side, model.cfg.img_encoder.patch_size)
    sample = Sample(name="a", image=tensor, size=image.shape[:2], label=torch.zeros(image.shape[:2]))
    assert torch.equal(HarnessPredictor(segmenter, names, cfg.bg_thresh)([sample])[0], flipped.labels)


@pytest.mark.parametrize("flip", [False, True])
def test_rotate_averages_the_four_turns_of_each_window(photos, flip):
    """rotate: each window is also segmented turned by 90, 180 and 270 degrees, its maps turned back; on a
    square image seen as one window at its own size the class maps are the mean of the turned images' (turned
    back), with ``flip`` of the turned images and their mirror images; the batched harness agrees."""
    from ovseg.evaluation.datasets import Sample
    from ovseg.evaluation.predictor import HarnessPredictor
    from ovseg.inference.preprocess import prepare_image

    model, image, names = dense_model(), photos["astronaut"][:96, 200:296], ["person", "flag", "sky"]
    cfg = ovseg.load_config().evaluate.seg
    cfg.merge_with({"scoring": "patches", "short_side": 96, "crop_size": 96, "stride": 96, "flip": flip})
    plain = ovseg.Segmenter(model, cfg)
    views = [torch.rot90(plain.predict(np.rot90(image, k).copy(), names).logits, -k, dims=(-2, -1))
             for k in range(4)]
    cfg.rotate = True
    segmenter = ovseg.Segmenter(model, cfg)
    turned = segmenter.predict(image, names)
    assert len(turned.boxes) == 4 * (2 if flip else 1)
    torch.testing.assert_close(turned.logits, torch.stack(views).mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(turned.logits, views[0], atol=1e-3)  # the turns do change the scores
    tensor = prepare_image(image, cfg.short_side, cfg.max_long_side, model.cfg.img_encoder.patch_size)
    sample = Sample(name="a", image=tensor, size=image.shape[:2], label=torch.zeros(image.shape[:2]))
    assert torch.equal(HarnessPredictor(segmenter, names, cfg.bg_thresh)([sample])[0], turned.labels)


def test_views_that_show_windows_in_the_same_shape_share_forward_passes():
    """flip + rotate on a non-square window: the 4 views of even turns (h x w) are one forward pass and the
    4 of odd turns (w x h) another; the encodings equal those of one view per pass up to rounding."""
    from ovseg.inference.slide import batches_of_same_shape, encode_crops, encode_windows

    model = dense_model()
    passes = []
    model.img_encoder.register_forward_hook(lambda m, i, o: passes.append(tuple(i[0].shape)))
    image = torch.randn(1, 3, 32, 48)
    batched = encode_windows(model, image, 64, 32, "whole", batch=8, per_patch=True, flip=True, rotate=True)
    assert sorted(passes) == [(4, 3, 32, 48), (4, 3, 48, 32)]
    passes.clear()
    alone = encode_windows(model, image, 64, 32, "whole", batch=1, per_patch=True, flip=True, rotate=True)
    assert len(passes) == 8 and batched.grid == alone.grid == (2, 3)
    for name in ("soft", "group_emb", "image_emb", "patch_emb"):
        torch.testing.assert_close(getattr(batched, name), getattr(alone, name), atol=1e-5, rtol=1e-5)
    assert (batched.group_maps == alone.group_maps).float().mean() > 0.99
    jobs = [((0, 32, 0, 48), (0, False)), ((0, 32, 0, 48), (1, False)), ((0, 32, 0, 32), (1, True)),
            ((0, 32, 0, 48), (2, True)), ((0, 32, 0, 32), (0, False))]
    assert batches_of_same_shape(jobs, 8) == [[0, 3], [1], [2, 4]]  # a square window: every turn together
    assert batches_of_same_shape(jobs, 1) == [[0], [3], [1], [2], [4]]
    square = encode_windows(model, image[..., :32], 64, 32, "whole", batch=8, per_patch=True, flip=True,
                            rotate=True)
    assert passes[-1] == (8, 3, 32, 32) and len(square.boxes) == 8
    with pytest.raises(ValueError, match="different shapes"):
        encode_crops(model, torch.cat([image, image]), views=[(0, False), (1, False)])
