"""Pretrained image-encoder starts (spec §1.2): random files in each published format, with the exact key
names and shapes the publishers use, land where the original's ``init_backbone_with_imagenet_weights`` puts
them; every other tensor is listed as unused; a wrong file is refused with one line before any step."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import ovseg
from ovseg.checkpoints import load_model
from ovseg.checkpoints.backbones import backbone_init, prepare_backbone
from ovseg.cli import main
from ovseg.config import load_config
from ovseg.engine.stages import build_model
from ovseg.engine.trainer import TrainingRun
from ovseg.errors import CheckpointError, ConfigError
from ovseg.factory import create_model, preset_path

CPU = torch.device("cpu")
WIDTH, BLOCKS, PATCH, GRID = 64, 4, 16, 4  # the tiny preset at 64 px: 2 + 2 blocks, a 4x4 patch grid
TINY = ["model.img_encoder.img_size=64"]
PARTS = {  # one ViT block, DINO/timm names -> shape at width C
    "norm1": lambda c: [(c,), (c,)],
    "attn.qkv": lambda c: [(3 * c, c), (3 * c,)],
    "attn.proj": lambda c: [(c, c), (c,)],
    "norm2": lambda c: [(c,), (c,)],
    "mlp.fc1": lambda c: [(4 * c, c), (4 * c,)],
    "mlp.fc2": lambda c: [(c, 4 * c), (c,)],
}


def dino_state(width: int = WIDTH, blocks: int = BLOCKS, grid: int = GRID, patch: int = PATCH) -> dict:
    """``dino_vitbase16_pretrain.pth``'s keys and shapes (ViT-B/16: width 768, 12 blocks, grid 14)."""
    sd = {
        "cls_token": torch.randn(1, 1, width),
        "pos_embed": torch.randn(1, 1 + grid * grid, width),
        "patch_embed.proj.weight": torch.randn(width, 3, patch, patch),
        "patch_embed.proj.bias": torch.randn(width),
    }
    for i in range(blocks):
        for part, shapes in PARTS.items():
            weight, bias = shapes(width)
            sd[f"blocks.{i}.{part}.weight"], sd[f"blocks.{i}.{part}.bias"] = torch.randn(weight), torch.randn(bias)
    sd["norm.weight"], sd["norm.bias"] = torch.randn(width), torch.randn(width)
    return sd


def hf_state(sd: dict, prefix: str = "") -> dict:
    """The same weights as transformers' ``ViTModel`` names them (facebook/dino-vitb16)."""
    c = sd["norm.weight"].shape[0]
    hf = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
        "pooler.dense.weight": torch.randn(c, c),
        "pooler.dense.bias": torch.randn(c),
    }
    for i in range(BLOCKS):
        for kind in ("weight", "bias"):
            q, k, v = sd[f"blocks.{i}.attn.qkv.{kind}"].chunk(3)
            layer = f"encoder.layer.{i}."
            hf.update(
                {
                    layer + f"attention.attention.query.{kind}": q,
                    layer + f"attention.attention.key.{kind}": k,
                    layer + f"attention.attention.value.{kind}": v,
                    layer + f"attention.output.dense.{kind}": sd[f"blocks.{i}.attn.proj.{kind}"],
                    layer + f"layernorm_before.{kind}": sd[f"blocks.{i}.norm1.{kind}"],
                    layer + f"layernorm_after.{kind}": sd[f"blocks.{i}.norm2.{kind}"],
                    layer + f"intermediate.dense.{kind}": sd[f"blocks.{i}.mlp.fc1.{kind}"],
                    layer + f"output.dense.{kind}": sd[f"blocks.{i}.mlp.fc2.{kind}"],
                }
            )
    return {prefix + k: v.clone().contiguous() for k, v in hf.items()}


def clip_visual_state(sd: dict, out_width: int) -> dict:
    """OpenAI CLIP's visual tower (``visual.`` prefix, as in the full CLIP state dict), with its text tower."""
    c = sd["norm.weight"].shape[0]
    vis = {
        "class_embedding": torch.randn(c),
        "positional_embedding": sd["pos_embed"][0],
        "conv1.weight": sd["patch_embed.proj.weight"],
        "ln_pre.weight": torch.randn(c),
        "ln_pre.bias": torch.randn(c),
        "ln_post.weight": sd["norm.weight"],
        "ln_post.bias": sd["norm.bias"],
        "proj": torch.randn(c, out_width),
    }
    names = {
        "attn.in_proj_weight": "attn.qkv.weight",
        "attn.in_proj_bias": "attn.qkv.bias",
        "attn.out_proj.weight": "attn.proj.weight",
        "attn.out_proj.bias": "attn.proj.bias",
        "ln_1.weight": "norm1.weight",
        "ln_1.bias": "norm1.bias",
        "mlp.c_fc.weight": "mlp.fc1.weight",
        "mlp.c_fc.bias": "mlp.fc1.bias",
        "mlp.c_proj.weight": "mlp.fc2.weight",
        "mlp.c_proj.bias": "mlp.fc2.bias",
        "ln_2.weight": "norm2.weight",
        "ln_2.bias": "norm2.bias",
    }
    for i in range(BLOCKS):
        vis.update({f"transformer.resblocks.{i}.{clip}": sd[f"blocks.{i}.{dino}"] for clip, dino in names.items()})
    text = {
        "token_embedding.weight": torch.randn(10, 32),
        "ln_final.weight": torch.randn(32),
        "text_projection": torch.randn(32, out_width),
        "logit_scale": torch.tensor(4.6),
        "transformer.resblocks.0.ln_1.weight": torch.randn(32),
    }
    return {**{f"visual.{k}": v for k, v in vis.items()}, **text}


def cfg_for(path, init: str = "dino", extra: list[str] = ()):
    opts = [*TINY, f"model.img_encoder.init={init}", f"model.img_encoder.init_checkpoint={path}", *extra]
    return load_config(preset_path("tiny"), opts)


def started(path, init: str = "dino", extra: list[str] = ()):
    return build_model(cfg_for(path, init, extra), CPU)


def assert_backbone_equal(encoder, sd: dict, pos: torch.Tensor | None = None) -> None:
    """Every DINO tensor where the original puts it: blocks 0-1 -> layers.0, 2-3 -> layers.1."""
    own = encoder.state_dict()
    for i in range(BLOCKS):
        stage, j = divmod(i, 2)
        for part in PARTS:
            for kind in ("weight", "bias"):
                assert torch.equal(own[f"layers.{stage}.blocks.{j}.{part}.{kind}"], sd[f"blocks.{i}.{part}.{kind}"])
    for key in ("patch_embed.proj.weight", "norm.weight", "norm.bias"):
        assert torch.equal(own[key], sd[key]), key
    torch.testing.assert_close(own["pos_embed"], sd["pos_embed"][0, 1:] if pos is None else pos, rtol=0, atol=1e-6)


def summary(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backbone init:")]
    assert len(lines) == 1, lines
    return lines[0]


# --------------------------------------------------------------------------------------------- formats
def test_a_dino_backbone_lands_as_the_original_maps_it(tmp_path, caplog):
    sd = dino_state()
    torch.save(sd, tmp_path / "dino_vitbase16_pretrain.pth")
    torch.manual_seed(0)
    fresh = create_model(cfg_for(tmp_path / "dino_vitbase16_pretrain.pth"))
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        model = started(tmp_path / "dino_vitbase16_pretrain.pth")
    assert_backbone_equal(model.img_encoder, sd)
    own = model.state_dict()
    # the original's spot keys (spec §1.2): blocks.0 -> layers.0.blocks.0, blocks.d0 -> layers.1.blocks.0
    assert torch.equal(own["img_encoder.layers.0.blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])
    assert torch.equal(own["img_encoder.layers.1.blocks.0.mlp.fc1.bias"], sd["blocks.2.mlp.fc1.bias"])
    assert torch.equal(own["img_encoder.pos_embed"], sd["pos_embed"][:, 1:][0])
    assert own["img_encoder.pos_embed"].shape == (GRID * GRID, WIDTH)  # stored 2-D, CLS row dropped
    # group tokens, the grouping block and the projectors keep their fresh init
    for key, value in fresh.state_dict().items():
        if ".downsample." in key or "group_token" in key or "projector" in key:
            assert torch.equal(own[key], value), key
    assert summary(caplog) == "backbone init: 53 tensors from dino_vitbase16_pretrain.pth (DINO); unused: cls_token"


def test_dino_full_checkpoint_reads_the_teacher_backbone(tmp_path, caplog):
    teacher, student = dino_state(), dino_state()
    head = {
        "head.mlp.0.weight": torch.randn(32, WIDTH),
        "head.mlp.0.bias": torch.randn(32),
        "head.last_layer.weight_g": torch.randn(100, 1),
        "head.last_layer.weight_v": torch.randn(100, 32),
    }
    ckpt = {
        "student": {f"module.backbone.{k}": v for k, v in student.items()}
        | {f"module.{k}": v for k, v in head.items()},
        "teacher": {f"backbone.{k}": v for k, v in teacher.items()} | head,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_base", patch_size=16, out_dim=65536, output_dir="/x"),
        "dino_loss": {"center": torch.zeros(1, 100)},
    }
    torch.save(ckpt, tmp_path / "dino_vitbase16_full_checkpoint.pth")
    with caplog.at_level(logging.INFO):
        model = started(tmp_path / "dino_vitbase16_full_checkpoint.pth")
    assert_backbone_equal(model.img_encoder, teacher)
    line = summary(caplog)
    assert "(DINO full checkpoint, teacher)" in line
    assert line.endswith("unused: student.module.* (58), teacher.head.* (4), teacher.backbone.cls_token"), line


@pytest.mark.parametrize("layout", ["safetensors", "bin-with-vit-prefix"])
def test_a_hugging_face_vit_folder(tmp_path, caplog, layout):
    sd = dino_state()
    folder = tmp_path / "dino-vitb16"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": WIDTH, "patch_size": PATCH}))
    if layout == "safetensors":
        save_file(hf_state(sd), folder / "model.safetensors")
    else:
        classifier = {"classifier.weight": torch.randn(10, WIDTH), "classifier.bias": torch.randn(10)}
        torch.save(hf_state(sd, "vit.") | classifier, folder / "pytorch_model.bin")
    with caplog.at_level(logging.INFO):
        model = started(folder)
    assert_backbone_equal(model.img_encoder, sd)  # query, key, value concatenated into qkv
    unused = (
        "vit.embeddings.cls_token, vit.pooler.* (2), classifier.* (2)"
        if layout != "safetensors"
        else "embeddings.cls_token, pooler.dense.* (2)"
    )
    assert summary(caplog).endswith(f"(Hugging Face ViT); unused: {unused}")


def test_a_timm_imagenet_state_dict(tmp_path, caplog):
    sd = dino_state() | {"head.weight": torch.randn(1000, WIDTH), "head.bias": torch.randn(1000)}
    torch.save(sd, tmp_path / "vit_base_patch16_224.pth")
    with caplog.at_level(logging.INFO):
        model = started(tmp_path / "vit_base_patch16_224.pth", "imagenet")
    assert_backbone_equal(model.img_encoder, sd)
    assert summary(caplog).endswith("(timm ViT); unused: cls_token, head.* (2)")


def test_a_clip_visual_tower_and_its_projection_head(tmp_path, caplog):
    sd = dino_state()
    clip = clip_visual_state(sd, out_width=WIDTH)  # CLIP ViT-B: 768 -> 512; other widths keep theirs
    torch.save(clip, tmp_path / "clip_vitb16.pth")
    with caplog.at_level(logging.INFO):
        model = started(tmp_path / "clip_vitb16.pth", "clip").eval()
    encoder = model.img_encoder
    assert_backbone_equal(encoder, sd)
    assert torch.equal(encoder.patch_embed.proj.bias, torch.zeros(WIDTH))  # conv1 has no bias
    assert torch.equal(encoder.proj, clip["visual.proj"])
    line = summary(caplog)
    assert "(OpenAI CLIP visual)" in line and "visual.class_embedding" in line and "visual.ln_pre.* (2)" in line
    assert "token_embedding.weight" in line and "transformer.resblocks.* (1)" not in line
    # the head is x @ proj: the segment tokens after the final norm, projected, then the projector
    normed = []
    encoder.norm.register_forward_hook(lambda m, i, o: normed.append(o))
    out = model.encode_image(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(out.image_feat_before_proj, normed[0] @ clip["visual.proj"])
    torch.testing.assert_close(out.image_x_before_proj, (normed[0] @ clip["visual.proj"]).mean(1))
    # only a CLIP start has the extra parameter; it survives a save/load round trip, the file's path does not
    assert "img_encoder.proj" not in create_model(preset_path("tiny")).state_dict()
    cfg = cfg_for(tmp_path / "clip_vitb16.pth", "clip")
    ovseg.save_model(model, cfg, tmp_path / "clip_start.safetensors")
    loaded, stored = load_model(tmp_path / "clip_start.safetensors")
    assert torch.equal(loaded.img_encoder.proj, encoder.proj)
    assert stored.model.img_encoder.init == "clip" and stored.model.img_encoder.init_checkpoint is None


def test_the_position_table_is_resized_bicubically_for_another_grid(tmp_path, caplog):
    sd = dino_state(grid=6)  # a 96-px file for a 64-px model
    torch.save(sd, tmp_path / "dino96.pth")
    with caplog.at_level(logging.INFO):
        model = started(tmp_path / "dino96.pth")
    table = sd["pos_embed"][0, 1:].reshape(1, 6, 6, WIDTH).permute(0, 3, 1, 2)
    expected = F.interpolate(table, size=(4, 4), mode="bicubic", align_corners=False)
    assert_backbone_equal(model.img_encoder, sd, expected.permute(0, 2, 3, 1).reshape(16, WIDTH))
    assert "position table resized 6x6 -> 4x4" in summary(caplog)


# ------------------------------------------------------------------------------------------- refusals
def test_a_backbone_of_another_width_names_the_key_and_both_shapes(tmp_path):
    torch.save(dino_state(width=32), tmp_path / "narrow.pth")
    with pytest.raises(CheckpointError) as e:
        started(tmp_path / "narrow.pth")
    assert str(e.value) == (
        f"{tmp_path / 'narrow.pth'}: 'patch_embed.proj.weight' has shape (32, 3, 16, 16), "
        "model.img_encoder expects (64, 3, 16, 16) for 'img_encoder.patch_embed.proj.weight' "
        "(a backbone of another width, patch size or architecture?)"
    )


def test_a_backbone_of_another_depth_or_architecture(tmp_path):
    torch.save(dino_state(blocks=6), tmp_path / "deep.pth")
    with pytest.raises(CheckpointError, match=r"6 ViT blocks, but model.img_encoder.depths \[2, 2\] hold 4"):
        started(tmp_path / "deep.pth")
    torch.save(dino_state() | {"blocks.0.ls1.gamma": torch.ones(WIDTH)}, tmp_path / "dinov2.pth")
    with pytest.raises(CheckpointError, match="'blocks.0.ls1.gamma' has no place in GroupViT's backbone"):
        started(tmp_path / "dinov2.pth")


def test_config_mistakes_are_one_line_each():
    def init_of(*opts):
        return backbone_init(load_config(preset_path("tiny"), list(opts)).model.img_encoder)

    assert init_of() is None
    assert init_of("model.img_encoder.imgnet_pretrained=dinos16").kind == "dino_vits16"  # the original's names
    with pytest.raises(ConfigError, match="init 'clip' and model.img_encoder.imgnet_pretrained 'dino' disagree"):
        init_of("model.img_encoder.init=clip", "model.img_encoder.imgnet_pretrained=dino")
    with pytest.raises(ConfigError, match="freeze_backbone is set but model.img_encoder.init is none"):
        init_of("model.img_encoder.freeze_backbone=true")
    with pytest.raises(ConfigError, match="needs model.img_encoder.stem 'patch'"):
        init_of("model.img_encoder.init=dino", "model.img_encoder.stem=conv")
    cfg = load_config(preset_path("ovsegmentor/pretrain_stage1"))
    with pytest.raises(
        ConfigError, match="init is 'dino' but no file is given: --opts model.img_encoder.init_checkpoint"
    ):
        prepare_backbone(backbone_init(cfg.model.img_encoder), cfg.model)


def train_args(tmp_path, cfg: str, *opts: str) -> list[str]:
    return [
        "train",
        "--cfg",
        str(preset_path(cfg)),
        "--output",
        str(tmp_path / "run"),
        "--opts",
        "data.type=scenes",
        "train.max_steps=1",
        *opts,
    ]


def refused(capsys, tmp_path, args: list[str], *needles: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not list((tmp_path / "run").glob("*.safetensors")) and not (tmp_path / "run" / "checkpoints").exists()


def test_bad_backbone_files_stop_ovseg_train_before_any_step(tmp_path, capsys):
    # a DINO ViT-S/16 file (384 wide, 6 heads, 12 blocks) for the paper's ViT-B/16 config
    torch.save(dino_state(width=384, blocks=12, grid=14), tmp_path / "dino_deitsmall16_pretrain.pth")
    refused(
        capsys,
        tmp_path,
        train_args(
            tmp_path,
            "ovsegmentor/pretrain_stage1",
            f"model.img_encoder.init_checkpoint={tmp_path / 'dino_deitsmall16_pretrain.pth'}",
        ),
        "'patch_embed.proj.weight' has shape (384, 3, 16, 16), model.img_encoder expects (768, 3, 16, 16)",
    )
    tiny = ["model.img_encoder.img_size=64", "data.image_size=64", "model.img_encoder.init=dino"]
    # a CLIP file named as DINO
    torch.save(clip_visual_state(dino_state(), WIDTH), tmp_path / "clip.pth")
    refused(
        capsys,
        tmp_path,
        train_args(tmp_path, "tiny", *tiny, f"model.img_encoder.init_checkpoint={tmp_path / 'clip.pth'}"),
        "OpenAI CLIP visual weights, but model.img_encoder.init is 'dino' (set model.img_encoder.init=clip)",
    )
    # a truncated file
    torch.save(dino_state(), tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:50_000])
    refused(
        capsys,
        tmp_path,
        train_args(tmp_path, "tiny", *tiny, f"model.img_encoder.init_checkpoint={tmp_path / 'cut.pth'}"),
        "cut.pth: truncated or corrupt torch file",
    )
    # a folder without weights, and a hub id (never downloaded)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "vit"}')
    refused(
        capsys,
        tmp_path,
        train_args(tmp_path, "tiny", *tiny, f"model.img_encoder.init_checkpoint={tmp_path / 'empty'}"),
        "a folder without weights (expected model.safetensors or pytorch_model.bin)",
    )
    refused(
        capsys,
        tmp_path,
        train_args(tmp_path, "tiny", *tiny, "model.img_encoder.init_checkpoint=facebook/dino-vitb16"),
        "facebook/dino-vitb16: not found (a local file or folder; ovseg downloads nothing",
    )


# ------------------------------------------------------------------------------------------- freezing
def test_freeze_backbone_keeps_the_loaded_weights_while_the_grouping_block_trains(tmp_path):
    sd = dino_state()
    torch.save(sd, tmp_path / "dino.pth")
    opts = [
        *TINY,
        "model.img_encoder.init=dino",
        f"model.img_encoder.init_checkpoint={tmp_path / 'dino.pth'}",
        "model.img_encoder.freeze_backbone=true",
        "data.type=scenes",
        "data.image_size=64",
        "data.batch_size=4",
        "data.scenes.train_size=8",
        "data.scenes.val_size=2",
        "train.max_steps=1",
        "train.warmup_epochs=0",
        "train.soft_assignment_fraction=0",
        "model.text_encoder.fixed=true",
    ]
    run = TrainingRun(load_config(preset_path("tiny"), opts), tmp_path / "run")
    encoder = run.model.img_encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    run.step([next(iter(run.loader))])
    assert_backbone_equal(encoder, sd, encoder.pos_embed.detach())  # stem, blocks, norm: as loaded
    for key in ("layers.0.downsample.mlp_inter.fc1.weight", "layers.0.group_token", "pos_embed"):
        assert not torch.equal(encoder.state_dict()[key], before[key]), key  # the original's table trains too


def test_the_paper_config_starts_from_a_full_size_dino_vitbase16_file(tmp_path, caplog):
    """pretrain_stage1.yml given dino_vitbase16_pretrain.pth (the published keys and ViT-B/16 shapes)."""
    state = dino_state(width=768, blocks=12, grid=14)
    path = tmp_path / "dino_vitbase16_pretrain.pth"
    torch.save(state, path)
    cfg = load_config(preset_path("ovsegmentor/pretrain_stage1"),
                      [f"model.img_encoder.init_checkpoint={path}", "model.text_encoder.pretrained=false"])
    caplog.set_level(logging.INFO)
    model = build_model(cfg, torch.device("cpu"))
    own = model.img_encoder.state_dict()
    assert torch.equal(own["layers.0.blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert torch.equal(own["layers.1.blocks.0.mlp.fc1.weight"], state["blocks.6.mlp.fc1.weight"])
    assert torch.equal(own["layers.1.blocks.5.attn.proj.bias"], state["blocks.11.attn.proj.bias"])
    assert torch.equal(own["pos_embed"], state["pos_embed"][0, 1:])  # (196, 768): the CLS row dropped
    assert torch.equal(own["patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    assert torch.equal(own["norm.weight"], state["norm.weight"])
    assert "backbone init: 149 tensors from dino_vitbase16_pretrain.pth (DINO); unused: cls_token" in caplog.text
