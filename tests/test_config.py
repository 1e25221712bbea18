"""Configs: _base_ inheritance, --opts overrides, and clear errors for unknown keys and bad types."""

from __future__ import annotations

import pytest

from ovseg.config import load_config
from ovseg.errors import ConfigError
from ovseg.factory import preset_path


def test_base_chain_and_opts(tmp_path):
    (tmp_path / "base.yml").write_text("model:\n  output_dim: 64\n  img_encoder:\n    depths: [1, 1]\n")
    (tmp_path / "child.yml").write_text("_base_: base.yml\nmodel:\n  proj_inner_dim: 32\n")
    cfg = load_config(tmp_path / "child.yml", ["model.output_dim=16", "evaluate.seg.bg_thresh=null"])
    assert cfg.model.output_dim == 16 and cfg.model.proj_inner_dim == 32
    assert cfg.model.img_encoder.depths == [1, 1]
    assert cfg.evaluate.seg.bg_thresh is None
    assert cfg.model.img_encoder.embed_dim == 768  # schema default kept


def test_seed_test_configs_carry_each_datasets_background_threshold():
    expected = {"test_voc12": 0.95, "test_voc_context": 0.35, "test_coco": 0.9, "test_ade20k": None}
    for name, thresh in expected.items():
        assert load_config(preset_path(name)).evaluate.seg.bg_thresh == thresh


def test_unknown_key_names_key_and_file(tmp_path):
    (tmp_path / "bad.yml").write_text("model:\n  img_encoder:\n    embed_dims: 768\n")
    with pytest.raises(ConfigError, match=r"bad.yml: bad key 'model.img_encoder.embed_dims'"):
        load_config(tmp_path / "bad.yml")
    with pytest.raises(ConfigError, match=r"--opts: bad key 'model.nope'"):
        load_config(None, ["model.nope=1"])


def test_wrong_type_names_key(tmp_path):
    (tmp_path / "bad.yml").write_text("model:\n  output_dim: large\n")
    with pytest.raises(ConfigError, match=r"model.output_dim"):
        load_config(tmp_path / "bad.yml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["model.output_dim"])


def test_missing_config_file_and_base_loops(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yml")
    (tmp_path / "a.yml").write_text("_base_: b.yml\n")
    (tmp_path / "b.yml").write_text("_base_: a.yml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yml")



def test_the_paper_training_configs_carry_the_paper_recipe():
    s1 = load_config(preset_path("ovsegmentor/pretrain_stage1"))
    s2 = load_config(preset_path("ovsegmentor/pretrain_stage2"))
    assert (s1.train.stage, s1.data.batch_size, s1.train.epochs, s1.train.base_lr) == (1, 256, 30, 6.4e-4)
    assert s1.model.use_entityloss and not s1.model.use_maskloss and s1.model.text_encoder.pretrained
    assert (s2.train.stage, s2.data.batch_size, s2.train.epochs, s2.train.base_lr) == (2, 128, 10, 1e-5)
    assert s2.model.use_maskloss and s2.model.text_encoder.fixed and s2.train.warmup_epochs == 0
    assert s1.model.img_encoder.embed_dim == s2.model.img_encoder.embed_dim == 768
