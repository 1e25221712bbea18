"""The model: shapes, grouping invariants, gradients, presets."""

from __future__ import annotations

import pytest
import torch

import ovseg
from ovseg.config import load_config
from ovseg.factory import preset_path


def tiny(groups: int = 4, **img) -> ovseg.OVSegmentor:
    opts = [f"model.img_encoder.num_output_groups=[{groups}]"] + [f"model.img_encoder.{k}={v}" for k, v in img.items()]
    return ovseg.create_model(load_config(preset_path("tiny"), opts))


@pytest.mark.parametrize("groups", [8, 16])
@pytest.mark.parametrize("size", [(224, 224), (160, 288), (100, 70)])
def test_shapes_for_8_and_16_groups_and_non_square_inputs(groups, size):
    torch.manual_seed(0)
    model = tiny(groups).eval()
    with torch.no_grad():
        out = model.encode_image(torch.randn(2, 3, *size))
    grid = (size[0] // 16, size[1] // 16)
    assert out.grid == grid
    assert out.image_x.shape == (2, 32)
    assert out.image_feat.shape == (2, groups, 32)
    assert out.image_feat_before_proj.shape == (2, groups, 64)
    a = out.assignments[0]
    assert a.soft.shape == a.hard.shape == (2, 1, groups, grid[0] * grid[1])
    assert a.q.shape == (2, 1, groups, 64) and a.k.shape == (2, 1, grid[0] * grid[1], 64)


def test_soft_maps_sum_to_one_over_groups_and_hard_maps_are_one_hot():
    model = tiny().eval()
    with torch.no_grad():
        a = model.encode_image(torch.randn(2, 3, 224, 224)).assignments[0]
    torch.testing.assert_close(a.soft.sum(dim=2), torch.ones(2, 1, 196))
    assert torch.equal(a.hard.sum(dim=2), torch.ones(2, 1, 196))
    assert torch.equal(a.hard.argmax(dim=2), a.soft.argmax(dim=2))


def test_gradients_reach_group_tokens_through_the_straight_through_assignment():
    torch.manual_seed(0)
    model = tiny().train()
    out = model.encode_image(torch.randn(2, 3, 224, 224))
    hard = out.assignments[0].hard
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}  # Gumbel hard one-hot in training
    out.image_x.sum().backward()
    grouping = model.img_encoder.layers[0].downsample.assign
    for p in (model.img_encoder.layers[0].group_token, grouping.q_proj.weight, grouping.k_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_gumbel_noise_only_in_training():
    model = tiny()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        model.eval()
        a, b = model.encode_image(x).image_x, model.encode_image(x).image_x
        assert torch.equal(a, b)


def test_logit_scale_is_clamped_at_100():
    model = tiny()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == 100.0
    assert tiny().scale().item() == pytest.approx(1 / 0.07)


def test_momentum_update_moves_the_ema_encoder_towards_the_online_one():
    model = ovseg.create_model(load_config(preset_path("tiny"), ["model.use_maskloss=true"]))
    online, ema = model.img_encoder.pos_embed, model.img_encoder_momentum.pos_embed
    with torch.no_grad():
        ema.zero_()
    model.momentum_update(0.9)
    torch.testing.assert_close(ema, 0.1 * online)
    assert not ema.requires_grad


def test_every_preset_builds_with_the_paper_sizes():
    sizes = {}
    for name in ("ovsegmentor/vit_b16_bert_8g", "ovsegmentor/vit_b16_bert_16g", "ovsegmentor/vit_s16_roberta"):
        model = ovseg.create_model(name)
        sizes[name] = (sum(p.numel() for p in model.parameters()), model.num_groups)
        del model
    assert sizes["ovsegmentor/vit_b16_bert_8g"] == (217_949_065, 8)  # spec §1.7: 217.95 M, eval build
    assert sizes["ovsegmentor/vit_b16_bert_16g"][1] == 16
    assert sizes["ovsegmentor/vit_s16_roberta"][1] == 8


def test_training_build_has_entity_decoder_and_momentum_encoder():
    cfg = load_config(preset_path("tiny"), ["model.use_entityloss=true", "model.use_maskloss=true"])
    model = ovseg.create_model(cfg)
    keys = model.state_dict().keys()
    assert any(k.startswith("multimodal_groupingblock.blocks.0.post_attn") for k in keys)
    assert any(k.startswith("bridge_projector.") for k in keys)
    assert any(k.startswith("img_encoder_momentum.") for k in keys)


def test_conv_stem_keeps_one_token_per_patch_and_refuses_other_strides():
    from ovseg.model.vision import GroupViT

    kwargs = dict(img_size=64, patch_size=8, embed_dim=64, depths=[1, 1], num_heads=[2, 2],
                  num_group_tokens=[8, 0], num_output_groups=[4])
    conv = GroupViT(stem="conv", **kwargs).eval()
    out = conv(torch.randn(2, 3, 64, 48))
    assert out.grid == (8, 6) and out.tokens.shape == (2, 4, 64)
    assert out.assignments[0].soft.shape[-1] == 48
    with pytest.raises(ValueError, match="power-of-two"):
        GroupViT(stem="conv", **{**kwargs, "patch_size": 6, "img_size": 48})
    with pytest.raises(ValueError, match="stem must be one of"):
        GroupViT(stem="pixels", **kwargs)


def test_centred_keys_make_the_assignment_blind_to_a_key_shared_by_every_patch():
    from ovseg.model.grouping import AssignAttention

    torch.manual_seed(0)
    groups, patches = torch.randn(2, 4, 16), torch.randn(2, 10, 16)
    for center, same in ((True, True), (False, False)):
        attn = AssignAttention(16, hard=False, gumbel=False, center_keys=center).eval()
        _, before, _ = attn(groups, patches)
        with torch.no_grad():
            attn.k_proj.bias.add_(torch.randn(16) * 3)  # the same key offset for every patch
        _, after, _ = attn(groups, patches)
        assert torch.allclose(before.soft, after.soft, atol=1e-6) is same


def test_local_segments_see_only_their_own_patches():
    """segment_values=stem, no group-token residual, no block after grouping: changing the pixels of one
    patch leaves every segment that does not own it unchanged; GroupViT's segments all change."""
    from ovseg.model.vision import GroupViT

    kwargs = dict(img_size=32, patch_size=8, embed_dim=32, depths=[1, 0], num_heads=[2, 2],
                  num_group_tokens=[4, 0], num_output_groups=[4], drop_path_rate=0.0)
    torch.manual_seed(0)
    image = torch.randn(1, 3, 32, 32)
    changed = image.clone()
    changed[..., :8, :8] += 0.05  # patch 0
    for local in (True, False):
        torch.manual_seed(1)
        model = GroupViT(segment_values="stem" if local else "tokens", group_token_residual=not local,
                         **kwargs).eval()
        with torch.no_grad():
            before, after = model(image), model(changed)
        hard = before.assignments[0].hard[0, 0]  # (G, N)
        assert torch.equal(hard, after.assignments[0].hard[0, 0])  # the same grouping
        others = hard[:, 0] == 0  # segments that do not own patch 0
        assert others.any()
        same = torch.allclose(before.tokens[0, others], after.tokens[0, others], atol=1e-6)
        assert same is local
    with pytest.raises(ValueError, match="segment_values"):
        GroupViT(segment_values="pixels", **kwargs)


def test_stem_extra_convs_keep_the_grid():
    from ovseg.model.vision import GroupViT

    model = GroupViT(img_size=32, patch_size=8, embed_dim=32, depths=[1, 0], num_heads=[2, 2],
                     num_group_tokens=[4, 0], num_output_groups=[2], stem="conv", stem_extra_convs=2).eval()
    out = model(torch.randn(1, 3, 32, 40))
    assert out.grid == (4, 5) and out.tokens.shape == (1, 2, 32)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.patch_embed.proj) == 3 + 2 + 1


def test_a_bad_image_encoder_setting_is_a_config_error_naming_it():
    from ovseg.errors import ConfigError

    cfg = load_config(preset_path("quickstart/stage1"), ["model.img_encoder.stem=patch"])
    with pytest.raises(ConfigError, match="model.img_encoder: stem_extra_convs needs stem 'conv'"):
        ovseg.create_model(cfg)
