"""ovseg pretrain-ssl: label-free pretraining of the quickstart's encoder on scenes no split uses, its file, its
record, resume, and the quickstart's ``--init``; every bad input is one line and exit status 2."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ovseg import cli
from ovseg.checkpoints.backbone_formats import read_ssl_header, ssl_encoder_shape, write_ssl_encoder
from ovseg.checkpoints.backbones import ssl_targets
from ovseg.config import load_config
from ovseg.data.scenes.dataset import SPLIT_SEEDS, CaptionedScenes, sample_scene
from ovseg.engine.ssl.backbone import SslBackbone
from ovseg.engine.ssl.simmim import Simmim, masked_l1, random_unit_mask
from ovseg.engine.ssl.stream import render_image, stream_key
from ovseg.engine.stages import build_model
from ovseg.engine.trainer import seed_everything
from ovseg.errors import CheckpointError, ConfigError
from ovseg.factory import create_model, preset_path
from ovseg.quickstart import resolve_init
from ovseg.weights import read_record, sha256_of, verify_record, write_record

CPU = torch.device("cpu")
FAST = ["ssl.batch_size=4", "ssl.local_crops=2", "ssl.steps=2", "ssl.warmup_steps=1", "ssl.log_every=1"]
# the quickstart test's tiny model: 32-px scenes, width 32, one block before the grouping
TINY_MODEL = [
    "data.image_size=32",
    "model.img_encoder.img_size=32",
    "model.img_encoder.embed_dim=32",
    "model.img_encoder.num_heads=[2,2]",
    "model.img_encoder.depths=[1,0]",
    "model.output_dim=32",
]
TINY_SSL = ["ssl.global_size=32", "ssl.local_size=16", "ssl.head_hidden=32", "ssl.head_bottleneck=16", "ssl.out_dim=64"]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """`ovseg pretrain-ssl` as the CLI registers it."""
    monkeypatch.setitem(cli.COMMANDS, "pretrain-ssl", "pretrain_ssl")


def pretrain(output: Path, cfg: str = "quickstart/ssl_dino", *opts: str) -> int:
    return cli.main(["pretrain-ssl", "--cfg", cfg, "--output", str(output), "--no-progress", "--opts", *FAST, *opts])


def stage1(*opts: str):
    return load_config(preset_path("quickstart/stage1"), list(opts))


def init_opts(path: Path) -> list[str]:
    return ["model.img_encoder.init=ovseg-ssl", f"model.img_encoder.init_checkpoint={path}"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dino")
    with pytest.MonkeyPatch.context() as m:
        m.setitem(cli.COMMANDS, "pretrain-ssl", "pretrain_ssl")
        assert pretrain(out, "quickstart/ssl_dino", "ssl.checkpoint_every=1") == 0
    return out


@pytest.mark.parametrize("method", ["dino", "ibot", "simmim"])
def test_each_method_writes_the_encoder_tensors_the_init_replaces(method, tmp_path):
    assert pretrain(tmp_path, f"quickstart/ssl_{method}", *TINY_SSL) == 0  # the preset's encoder, small heads/crops
    weights = tmp_path / "encoder.safetensors"
    header = read_ssl_header(weights)
    encoder = SslBackbone(stage1().model.img_encoder)  # the same stem and blocks as the quickstart's GroupViT
    quickstart = create_model(stage1("model.text_encoder.pretrained=false")).img_encoder
    assert set(header.shapes) == set(ssl_targets(quickstart))
    assert set(header.shapes) == set(encoder.encoder_state())
    assert header.method == method and header.shape == {
        "embed_dim": 128,
        "patch_size": 8,
        "stem": "conv",
        "stem_extra_convs": 2,
        "depth": 3,
        "img_size": 64,
    }
    assert weights.stat().st_size < 5_000_000  # a few MB: small enough to ship (1.0 M float32 values)
    record = verify_record(weights)
    assert record.steps == 2 and record.seed == 0 and record.config["ssl"]["method"] == method
    assert record.command.startswith(f"ovseg pretrain-ssl --cfg quickstart/ssl_{method}")
    assert {"python", "torch", "ovseg"} <= set(record.software) and record.machine
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["loss_total"] > 0 for m in metrics)
    assert ("loss_patch" in metrics[0]) == (method == "ibot") and ("loss_pixel" in metrics[0]) == (method == "simmim")


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(dino_run, tmp_path):
    shutil.copytree(dino_run / "checkpoints", tmp_path / "checkpoints")
    for leftover in ["latest.json", *(p.name for p in (tmp_path / "checkpoints").glob("step_00000002.*"))]:
        (tmp_path / "checkpoints" / leftover).unlink()  # as if stopped after step 1
    assert pretrain(tmp_path, "quickstart/ssl_dino", "ssl.checkpoint_every=1") == 0
    resumed, whole = load_file(tmp_path / "encoder.safetensors"), load_file(dino_run / "encoder.safetensors")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]


def test_resuming_with_other_settings_is_one_line(dino_run, tmp_path, capsys):
    shutil.copytree(dino_run / "checkpoints", tmp_path / "checkpoints")
    assert pretrain(tmp_path, "quickstart/ssl_ibot") == 2
    line = one_error_line(capsys)
    assert "holds a pretraining with other settings (ssl.method: dino → ibot)" in line


def tiny_simmim() -> tuple[Simmim, torch.Tensor, torch.Tensor]:
    """SimMIM on the tiny model (32-px views: 4×4 patches, 2×2 mask units), two views and a fixed mask."""
    seed_everything(0)
    cfg = load_config(preset_path("quickstart/ssl_simmim"), [*TINY_MODEL, "ssl.global_size=32"])
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = mask[1, 2:, :] = True  # image 0: the top-left unit; image 1: the bottom two units
    return Simmim(cfg), torch.randn(2, 3, 32, 32), mask.flatten(1)


def test_simmim_masks_an_exact_share_of_whole_units():
    seed_everything(0)
    mask = random_unit_mask(5, (8, 8), 2, 0.55).view(5, 8, 8)
    assert mask.sum(dim=(1, 2)).tolist() == [36] * 5  # round(0.55 · 16) = 9 units of 2×2 patches per image
    units = mask.view(5, 4, 2, 4, 2)
    assert torch.equal(units.all(dim=(2, 4)), units.any(dim=(2, 4)))  # a unit is masked whole or not at all
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 5  # each image draws its own


def test_simmim_blanks_the_masked_pixels_before_the_stem():
    method, view, mask = tiny_simmim()
    seen = []
    method.student["backbone"].patch_embed.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    method([view], mask)
    stem_input = seen[0]
    assert (stem_input[0, :, :16, :16] == 0).all() and (stem_input[1, :, 16:, :] == 0).all()
    visible = torch.ones(2, 1, 32, 32, dtype=torch.bool)
    visible[0, :, :16, :16] = visible[1, :, 16:, :] = False
    assert torch.equal(stem_input * visible, view * visible)  # the rest is the view as it is


def test_simmim_trains_on_the_masked_patches_only():
    method, view, mask = tiny_simmim()
    outputs = []

    def keep(_, __, out):
        out.retain_grad()
        outputs.append(out)

    method.student["head"].register_forward_hook(keep)
    method([view], mask)["total"].backward()
    grad = outputs[0].grad.abs().sum(-1)  # (B, N): how much each patch's prediction moves the loss
    assert (grad[~mask] == 0).all() and (grad[mask] > 0).all()
    # the L1 itself: an unmasked patch's target never counts, a masked one's does
    pred, target = torch.zeros(1, 2, 3), torch.tensor([[[1.0, 2.0, 3.0], [9.0, 9.0, 9.0]]])
    only_first = torch.tensor([[True, False]])
    assert masked_l1(pred, target, only_first) == 2.0
    assert masked_l1(pred, target + torch.tensor([0.0, 5.0])[None, :, None], only_first) == 2.0
    assert masked_l1(pred, target + torch.tensor([3.0, 0.0])[None, :, None], only_first) == 5.0


def test_simmim_resumes_where_it_stopped_and_checks_its_mask(tmp_path, capsys):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert pretrain(whole, "quickstart/ssl_simmim", "ssl.checkpoint_every=1") == 0
    shutil.copytree(whole / "checkpoints", part / "checkpoints")
    for leftover in ["latest.json", *(p.name for p in (part / "checkpoints").glob("step_00000002.*"))]:
        (part / "checkpoints" / leftover).unlink()
    assert pretrain(part, "quickstart/ssl_simmim", "ssl.checkpoint_every=1") == 0
    resumed, uninterrupted = load_file(part / "encoder.safetensors"), load_file(whole / "encoder.safetensors")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert pretrain(tmp_path / "bad", "quickstart/ssl_simmim", "ssl.mask_ratio_mim=1.0") == 2
    assert one_error_line(capsys).endswith(": ssl.mask_ratio_mim=1.0: masks 16 of 16 units (need 1–15)")
    with pytest.raises(ConfigError, match="ssl.mask_unit_mim=3: a 64-px view"):
        Simmim(load_config(preset_path("quickstart/ssl_simmim"), ["ssl.mask_unit_mim=3"]))


def test_init_sets_stem_and_blocks_and_leaves_grouping_fresh(dino_run):
    weights = dino_run / "encoder.safetensors"
    seed_everything(0)
    scratch = build_model(stage1(), CPU).img_encoder.state_dict()
    seed_everything(0)
    started = build_model(stage1(*init_opts(weights)), CPU)
    state, file = started.img_encoder.state_dict(), load_file(weights)
    assert all(torch.equal(state[k], v) for k, v in file.items())
    assert not torch.equal(state["layers.0.blocks.0.attn.qkv.weight"], scratch["layers.0.blocks.0.attn.qkv.weight"])
    fresh = [k for k in state if k.startswith(("layers.0.group_token", "layers.0.downsample."))]
    assert fresh and all(torch.equal(state[k], scratch[k]) for k in fresh)  # as a run from scratch draws them


def test_an_init_of_another_width_or_stem_is_one_line(tmp_path, capsys):
    for name, opts in {
        "wide": ["model.img_encoder.embed_dim=64"],
        "stem": ["model.img_encoder.stem_extra_convs=1"],
    }.items():
        ie = stage1(*opts).model.img_encoder
        write_ssl_encoder(
            SslBackbone(ie).encoder_state(), ssl_encoder_shape(ie), "dino", tmp_path / f"{name}.safetensors"
        )
    with pytest.raises(
        CheckpointError,
        match=r"'patch_embed.proj.0.weight' has shape \(16, 3, 3, 3\), "
        r"model.img_encoder expects \(32, 3, 3, 3\)",
    ):
        build_model(stage1(*init_opts(tmp_path / "wide.safetensors")), CPU)
    with pytest.raises(
        CheckpointError,
        match=r"'patch_embed.proj.\d+.\w+' \(.*\) has no place in model.img_encoder, "
        r"whose stem starts with 'patch_embed.proj.0.weight' \(32, 3, 3, 3\)",
    ):
        build_model(stage1(*init_opts(tmp_path / "stem.safetensors")), CPU)
    assert cli.main(["quickstart", "--output", str(tmp_path / "q"), "--init", str(tmp_path / "wide.safetensors")]) == 2
    assert "has shape (16, 3, 3, 3), model.img_encoder expects (32, 3, 3, 3)" in one_error_line(capsys)


def test_the_same_encoder_is_written_to_the_same_bytes(tmp_path):
    """A rerun of the recorded pretraining can reproduce the shipped sha256: safetensors writes several header
    entries in a random order (even within one process), so the file carries one."""
    tensors = {"pos_embed": torch.arange(6.0).reshape(2, 3), "patch_embed.proj.0.weight": torch.ones(4)}
    shape = ssl_encoder_shape(stage1().model.img_encoder)
    digests = set()
    for i in range(8):
        write_ssl_encoder(tensors, shape, "ibot", tmp_path / f"{i}.safetensors")
        digests.add(sha256_of(tmp_path / f"{i}.safetensors"))
    assert len(digests) == 1
    header = read_ssl_header(tmp_path / "0.safetensors")
    assert header.shape == shape and header.method == "ibot" and header.shapes["pos_embed"] == (2, 3)


def test_the_first_layout_is_still_read(tmp_path):
    from safetensors.torch import save_file

    shape = ssl_encoder_shape(stage1().model.img_encoder)
    path = tmp_path / "old.safetensors"
    meta = {"format": "ovseg-ssl/1", "encoder": json.dumps(shape), "method": "dino"}
    save_file({"pos_embed": torch.zeros(64, 128)}, str(path), metadata=meta)
    header = read_ssl_header(path)
    assert header.shape == shape and header.method == "dino"


@pytest.mark.parametrize("make", ["missing", "junk", "huge header", "torch file", "other format"])
def test_a_file_that_is_not_an_ssl_init_is_one_line(make, tmp_path, capsys):
    path = tmp_path / "init.safetensors"
    if make == "junk":
        path.write_bytes(b"not weights at all")
    elif make == "huge header":
        path.write_bytes((10**9).to_bytes(8, "little") + b"{" + b" " * 64)
    elif make == "torch file":
        torch.save({"patch_embed.proj.0.weight": torch.zeros(1)}, path)
    elif make == "other format":
        from safetensors.torch import save_file

        save_file({"pos_embed": torch.zeros(64, 128)}, str(path), metadata={"format": "ovseg/1"})
    assert cli.main(["quickstart", "--output", str(tmp_path / "q"), "--init", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and (
        "not found" in line if make == "missing" else "safetensors" in line or "not an ovseg-ssl init" in line
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("bogus", "--init: unknown 'bogus' (expected scratch, ssl or"),
        ("ssl", "--init ssl: this installation has no packaged start"),
    ],
)
def test_an_unknown_init_or_an_absent_packaged_one_is_one_line(value, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ovseg.quickstart.QUICKSTART_SSL", tmp_path / "quickstart_ssl.safetensors")
    assert cli.main(["quickstart", "--output", str(tmp_path / "q"), "--init", value]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "q").exists()  # refused before anything was written


def test_the_packaged_init_is_checked_against_its_record(dino_run, tmp_path, monkeypatch):
    packaged = tmp_path / "quickstart_ssl.safetensors"
    shutil.copy(dino_run / "encoder.safetensors", packaged)
    shutil.copy(dino_run / "encoder.json", tmp_path / "quickstart_ssl.json")
    monkeypatch.setattr("ovseg.quickstart.QUICKSTART_SSL", packaged)
    record = json.loads((tmp_path / "quickstart_ssl.json").read_text())
    choice = resolve_init("ssl")
    assert choice.describe() == {"name": "ssl", "path": str(packaged), "sha256": record["sha256"]}
    assert choice.opts() == init_opts(packaged)
    assert resolve_init("scratch").opts() == [] and resolve_init("scratch").describe()["sha256"] is None
    data = bytearray(packaged.read_bytes())
    data[-1] ^= 1  # a damaged or replaced shipped file
    packaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="differs from its record's"):
        resolve_init("ssl")


def test_the_shipped_start_matches_its_record_and_fits_the_quickstart():
    """The packaged file is the one its record describes, made as recorded, and starts the README's model."""
    from ovseg.weights import QUICKSTART_SSL, record_path

    record = verify_record(QUICKSTART_SSL, record_path(QUICKSTART_SSL))
    assert record.command.startswith("ovseg pretrain-ssl --cfg quickstart/ssl_ibot")
    assert record.config["ssl"]["method"] == "ibot" and record.steps == record.config["ssl"]["steps"] == 450
    assert {"torch", "ovseg"} <= set(record.software) and record.machine and record.minutes > 0
    assert QUICKSTART_SSL.stat().st_size < 5_000_000
    header = read_ssl_header(QUICKSTART_SSL)
    quickstart = create_model(stage1("model.text_encoder.pretrained=false")).img_encoder
    own = quickstart.state_dict()
    assert {k: tuple(v) for k, v in header.shapes.items()} == {k: tuple(own[k].shape) for k in ssl_targets(quickstart)}
    assert resolve_init("ssl").describe()["sha256"] == record.sha256 == sha256_of(QUICKSTART_SSL)


def test_the_record_checker_catches_a_changed_file(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x00" * 100)
    write_record(
        weights,
        command="ovseg pretrain-ssl",
        config={"seed": 3},
        seed=3,
        steps=7,
        minutes=1.5,
        machine="test",
        software={"torch": torch.__version__},
    )
    assert verify_record(weights).sha256 == sha256_of(weights) and read_record(tmp_path / "w.json").steps == 7
    weights.write_bytes(b"\x00" * 99 + b"\x01")
    with pytest.raises(CheckpointError, match=r"w.safetensors: sha256 [0-9a-f]{64} differs from its record's"):
        verify_record(weights)
    record = json.loads((tmp_path / "w.json").read_text())
    del record["machine"]
    (tmp_path / "w.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="weights record without 'machine'"):
        verify_record(weights)


def test_the_stream_never_draws_a_scene_of_any_split():
    """Each split seeds scene i and its layouts from text keys that start with its integer seed; the
    stream's keys start with 'ssl/', so none coincides, for any seed."""
    val = CaptionedScenes("val", size=3, image_size=32, seed=0)
    assert [s.caption for s in val.scenes] == [  # the splits' key scheme that this argument rests on
        sample_scene(random.Random(f"{SPLIT_SEEDS['val']}/scene/{i}")).caption for i in range(3)
    ]
    split_keys = {
        f"{seed + offset}/{part}/{i}"
        for seed in range(4)
        for offset in SPLIT_SEEDS.values()
        for part in ("scene", "layout", "partner", "background")
        for i in range(4096)
    }
    stream_keys = {stream_key(seed, i, part) for seed in range(4) for part in ("scene", "layout") for i in range(4096)}
    assert len(stream_keys) == 4 * 2 * 4096 and not stream_keys & split_keys
    assert all(k.split("/")[0] == "ssl" for k in stream_keys)
    test = CaptionedScenes("test", size=1, image_size=64, seed=0)
    assert not (render_image(0, 0, 64, 1.0) == test.render(0)[0]).all()


def test_quickstart_starts_stage1_from_a_pretrained_file_and_names_it(tmp_path):
    """... with the paper's own design (--design faithful) on top of the self-supervised start."""
    assert pretrain(tmp_path / "ssl", "quickstart/ssl_ibot", *TINY_MODEL, *TINY_SSL) == 0
    weights = tmp_path / "ssl" / "encoder.safetensors"
    tiny = [
        "data.scenes.train_size=64",
        "data.scenes.val_size=4",
        "data.scenes.test_size=6",
        "data.batch_size=16",
        "train.max_steps=2",
        "evaluate.val_every_steps=0",
        "evaluate.val_bg_thresholds=[0.5,0.9]",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ovseg",
            "quickstart",
            "--output",
            str(tmp_path / "q"),
            "--overlays",
            "0",
            "--init",
            str(weights),
            "--design",
            "faithful",
            "--opts",
            *TINY_MODEL,
            "model.img_encoder.depths=[1,1]",  # the paper's design: a block after the grouping
            *tiny,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "q" / "results.json").read_text())
    assert report["init"] == {"name": "file", "path": str(weights), "sha256": sha256_of(weights)}
    assert report["settings"]["stage1"]["model"]["img_encoder"]["init"] == "ovseg-ssl"
    assert report["settings"]["stage2"]["model"]["img_encoder"]["init"] == "none"  # stage 2 starts from stage 1
    assert "init file" in done.stdout
    assert report["design"] == "faithful" and report["scoring"] == "groups" and report["refine"] == "none"
    assert report["settings"]["stage1"]["model"]["img_encoder"]["depths"] == [1, 1]
    assert report["settings"]["stage1"]["model"]["img_encoder"]["center_assign_keys"] is False


def test_the_readme_command_starts_from_scratch():
    """The default that scored higher over paired seeds (BENCHMARKS.md); the shipped start is `--init ssl`."""
    import argparse

    from ovseg.cli import quickstart as quickstart_cli
    from ovseg.quickstart import QuickstartOptions

    parser = argparse.ArgumentParser()
    quickstart_cli.add_arguments(parser)
    assert parser.parse_args([]).init == "scratch" == QuickstartOptions(Path("q")).init
    assert parser.parse_args(["--init", "ssl"]).init == "ssl"
