"""Resume survives a torn write: a damaged ``latest.json`` or newest checkpoint falls back to the newest intact
pair kept next to it, with a warning per file passed over; only when none is intact does resume stop, in one
line (exit status 2 from the CLI)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ovseg.checkpoints import training
from ovseg.checkpoints.training import checkpoint_problem, latest_checkpoint, model_config_change
from ovseg.cli import main
from ovseg.config import load_config
from ovseg.engine.trainer import train
from ovseg.errors import CheckpointError
from ovseg.factory import preset_path

# the tiny preset, smaller still: 2 steps of 4 scenes, a checkpoint after each, both kept
OPTS = ["data.scenes.train_size=8", "data.scenes.val_size=2", "data.scenes.test_size=2", "data.batch_size=4",
        "data.image_size=32", "model.img_encoder.img_size=32", "model.img_encoder.embed_dim=32",
        "model.img_encoder.num_heads=[2,2]", "model.img_encoder.depths=[1,0]", "evaluate.val_every_steps=0",
        "evaluate.val_bg_thresholds=[0.5]", "train.max_steps=2", "checkpoint.every_steps=1",
        "checkpoint.keep_last=2"]
LOGGER = training.__name__


def tiny_cfg():
    return load_config(preset_path("tiny"), OPTS)


def pair(folder: Path, step: int) -> tuple[Path, Path]:
    return folder / f"step_{step:08d}.safetensors", folder / f"step_{step:08d}.state.pt"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished run with the checkpoint pairs of steps 1 and 2; tests damage copies of it."""
    run = tmp_path_factory.mktemp("run")
    assert train(tiny_cfg(), run).steps == 2
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def ckpts(run) -> Path:
    return run / "checkpoints"


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]


def test_an_intact_run_resumes_from_what_latest_json_names_without_a_warning(ckpts, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert latest_checkpoint(ckpts) == pair(ckpts, 2)
    assert warnings(caplog) == []
    assert latest_checkpoint(ckpts.parent / "nowhere") is None


@pytest.mark.parametrize("text,why", [
    ('{"step": 2, "weights": "step_0000', "not readable JSON"),  # truncated
    (b"\xff\xfe\x00", "not readable JSON"),  # not UTF-8
    ("[]", "does not name"),
    ('{"weights": 2, "state": null}', "does not name"),
    ('{"weights": "../step_00000002.safetensors", "state": "../step_00000002.state.pt"}', "does not name"),
    ('{"weights": "step_00000002.safetensors", "state": "step_00000001.state.pt"}', "does not name"),
    (None, "missing"),
])
def test_an_unreadable_latest_json_falls_back_to_the_newest_intact_pair(ckpts, caplog, text, why):
    pointer = ckpts / "latest.json"
    if text is None:
        pointer.unlink()
    else:
        pointer.write_bytes(text if isinstance(text, bytes) else text.encode())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert latest_checkpoint(ckpts) == pair(ckpts, 2)
    assert warnings(caplog)[0].startswith(f"skipped {pointer}: {why}")
    assert warnings(caplog)[1:] == [f"resuming from {pair(ckpts, 2)[0]}, the newest intact checkpoint"]


def test_latest_json_naming_missing_files_falls_back(ckpts, caplog):
    (ckpts / "latest.json").write_text(json.dumps({"step": 9, "weights": "step_00000009.safetensors",
                                                   "state": "step_00000009.state.pt"}))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert latest_checkpoint(ckpts) == pair(ckpts, 2)
    assert warnings(caplog)[0] == f"skipped checkpoint {ckpts / 'step_00000009.safetensors'}: missing"


def bad_config(path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(path), metadata={"config": '{"model": '})


@pytest.mark.parametrize("half,damage,why", [
    (0, truncate, "not a readable safetensors file (Error while deserializing header"),
    (0, lambda p: p.write_bytes(b""), "empty"),
    (0, bad_config, "the config in its header is not valid JSON"),
    (1, truncate, "unreadable training state ("),
    (1, lambda p: p.write_bytes(b"\x80\x02garbage"), "unreadable training state ("),
    (1, lambda p: torch.save([1, 2], p), "not a training state"),
    (1, lambda p: p.unlink(), "missing"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_pair(ckpts, caplog, half, damage, why):
    bad = pair(ckpts, 2)[half]
    damage(bad)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert latest_checkpoint(ckpts) == pair(ckpts, 1)
    skipped, resuming = warnings(caplog)
    assert skipped.startswith(f"skipped checkpoint {bad}: {why}") and "\n" not in skipped
    assert resuming == f"resuming from {pair(ckpts, 1)[0]}, the newest intact checkpoint"


def test_a_header_that_is_not_json_is_one_line_for_model_config_change(tmp_path):
    bad_config(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="w.safetensors: the config in its header is not valid JSON") as e:
        model_config_change(tmp_path / "w.safetensors", {})
    assert "\n" not in str(e.value)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "list.safetensors"), metadata={"config": "[1]"})
    with pytest.raises(CheckpointError, match="not a mapping"):
        model_config_change(tmp_path / "list.safetensors", {})


def test_no_intact_checkpoint_is_one_line_naming_the_folder_and_exit_status_2(run, ckpts, capsys):
    for path in (*pair(ckpts, 1), *pair(ckpts, 2), ckpts / "latest.json"):
        truncate(path)
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(ckpts)
    assert str(e.value).startswith(f"{ckpts}: no intact training checkpoint") and "\n" not in str(e.value)
    code = main(["train", "--cfg", str(preset_path("tiny")), "--output", str(run), "--opts", *OPTS])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [f"ovseg train: error: {e.value}"]


def test_a_run_with_a_torn_newest_checkpoint_resumes_from_the_older_one_and_finishes(run, ckpts, caplog):
    truncate(pair(ckpts, 2)[0])
    with caplog.at_level(logging.INFO):
        result = train(tiny_cfg(), run)
    assert result.steps == 2
    assert f"skipped checkpoint {pair(ckpts, 2)[0]}: not a readable safetensors file" in caplog.text
    assert f"resumed from {pair(ckpts, 1)[0]} at step 1" in caplog.text
    assert checkpoint_problem(ckpts, "step_00000002") is None  # step 2 was trained again and rewritten
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss_total" in r]
    assert steps == [1, 2, 2]  # the first run's steps, then the resumed one's


def test_pruning_never_counts_damaged_pairs_newer_than_the_one_just_written(tmp_path):
    for step in (1, 2, 5):
        for path in pair(tmp_path, step):
            path.write_bytes(b"x")
    training._prune(tmp_path, 1, "step_00000002")  # a run resumed at step 1 (5 was damaged) just saved step 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in (*pair(tmp_path, 2), *pair(tmp_path, 5))]
