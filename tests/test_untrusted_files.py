"""Crafted checkpoints (made here, never committed): a file is data; it never runs code, resolves a lookup,
leaks the environment, allocates what its weights do not hold, or ends in a traceback.

Every case runs the real command line (``ovseg.cli.main``) and asserts: exit status 2, one line on stderr
naming the file and the problem, no marker file written by injected code, no secret in any output, and no
output file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ovseg.cli import main

SECRET_NAME, SECRET = "OVSEG_TEST_SECRET", "s3cr3t-6f1d0a"
REFERENCE_CONFIG = Path(__file__).parent / "data" / "reference" / "config.json"


@pytest.fixture(autouse=True)
def secret_in_environment(monkeypatch):
    monkeypatch.setenv(SECRET_NAME, SECRET)


def stored(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return load_file(path), json.loads(meta["config"])


def crafted(tmp_path: Path, base: Path, edit, name: str = "crafted.safetensors",
            config_text: str | None = None) -> Path:
    """A copy of ``base`` (an ovseg checkpoint) whose stored config was changed by ``edit(config)``."""
    tensors, config = stored(base)
    edit(config)
    path = tmp_path / name
    save_file(tensors, path, metadata={"format": "ovseg/1", "config": config_text or json.dumps(config)})
    return path


def refused(capsys, tmp_path: Path, checkpoint: Path, *needles: str, command: str = "convert") -> str:
    """Run ``ovseg convert`` (or ``demo``) on ``checkpoint``; assert the one-line refusal and nothing written."""
    out = tmp_path / "out"
    if command == "convert":
        status = main(["convert", str(checkpoint), str(out / "converted.safetensors")])
    else:
        photos = tmp_path / "photos"
        photos.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photos / "a.png")
        status = main(["demo", "--resume", str(checkpoint), "--image_folder", str(photos), "--output_folder", str(out)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in (checkpoint.name, *needles):
        assert needle in lines[0], lines[0]
    assert SECRET not in captured.out + captured.err
    assert not out.exists() or not any(out.rglob("*.*")), list(out.rglob("*"))
    return lines[0]


# --------------------------------------------------------------------------------- code through the config
def remote_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A transformers model folder whose configuration module writes a marker file when imported."""
    folder, marker = tmp_path / "evil_model", tmp_path / "code-ran"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                           "AutoModel": "modeling_evil.EvilModel"}}))
    code = f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n" \
           "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    return folder, marker


def test_a_remote_code_folder_named_by_a_checkpoint_is_refused(tmp_path, tiny_checkpoint, capsys):
    folder, marker = remote_code_folder(tmp_path)

    def edit(config):
        config["model"]["text_encoder"].update(name=str(folder), hf_overrides={"trust_remote_code": True})

    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint, edit), "model.text_encoder.name", "built-in",
            command="demo")
    assert not marker.exists()


def test_loader_arguments_in_overrides_are_refused_by_name(tmp_path, tiny_checkpoint, capsys):
    for key, value in (("trust_remote_code", True), ("revision", "refs/pr/1"), ("auto_map", {"AutoModel": "x.Y"})):
        def edit(config, key=key, value=value):
            config["model"]["text_encoder"]["hf_overrides"][key] = value

        refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint, edit),
                f"model.text_encoder.hf_overrides.{key}", "loader argument")


def test_a_hub_id_with_a_revision_is_refused(tmp_path, tiny_checkpoint, capsys):
    def edit(config):
        config["model"]["text_encoder"].update(name="someone/bert-with-code", hf_overrides={"revision": "abc123"})

    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint, edit), "model.text_encoder.name")


def test_a_tokenizer_folder_named_by_a_checkpoint_is_refused(tmp_path, tiny_checkpoint, capsys):
    folder, marker = remote_code_folder(tmp_path)
    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint,
                                      lambda c: c["model"]["text_encoder"].update(tokenizer=str(folder))),
            "model.text_encoder.tokenizer")
    assert not marker.exists()


def test_an_official_pth_whose_bert_config_asks_for_remote_code_is_refused(tmp_path, reference_weights, capsys):
    config = json.loads(REFERENCE_CONFIG.read_text())
    config["model"]["text_encoder"]["hf_bert_config"]["trust_remote_code"] = True
    path = tmp_path / "official.pth"
    torch.save({"model": load_file(reference_weights), "config": config}, path)
    refused(capsys, tmp_path, path, "hf_overrides.trust_remote_code")


# ------------------------------------------------------------------------------------------ interpolations
@pytest.mark.parametrize("where, value", [
    ("entity_prompt", "${oc.env:" + SECRET_NAME + "}"),
    ("entity_prompt", "${oc.env:OVSEG_SURELY_UNSET_VARIABLE}"),
    ("entity_prompt", "${oc.decode:'{a: 1}'}"),
    ("img_encoder.depths", [2, "${oc.env:" + SECRET_NAME + "}"]),
    ("text_encoder.hf_overrides", {"${oc.env:" + SECRET_NAME + "}": 1}),
])
def test_interpolations_are_never_resolved(tmp_path, tiny_checkpoint, capsys, where, value):
    def edit(config):
        node = config["model"]
        *parents, leaf = where.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value

    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint, edit), "interpolation")


def test_settings_outside_the_model_section_are_ignored_not_resolved(tmp_path, tiny_checkpoint, capsys):
    """A file's data/train/output settings are never read: converting it writes schema defaults there."""
    def edit(config):
        config["data"]["shards"] = "${oc.env:" + SECRET_NAME + "}"
        config["output"] = "/etc/somewhere"

    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(crafted(tmp_path, tiny_checkpoint, edit)), str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        header = json.dumps(f.metadata())
    assert SECRET not in header and "${oc.env" not in header and "/etc/somewhere" not in header
    assert SECRET not in capsys.readouterr().out


def test_a_format_string_prompt_is_refused(tmp_path, tiny_checkpoint, capsys):
    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint,
                                      lambda c: c["model"].update(entity_prompt="{0.__class__.__init__}")),
            "model.entity_prompt")


# ----------------------------------------------------------------------------------------------- sizes
def test_absurd_sizes_are_refused_before_anything_is_built(tmp_path, tiny_checkpoint, capsys):
    def absurd_vocabulary(config):
        config["model"]["text_encoder"]["hf_overrides"]["vocab_size"] = 50_000_000

    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint, absurd_vocabulary), "vocab_size", "outside")
    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint,
                                      lambda c: c["model"]["img_encoder"].update(depths=[100_000, 0])),
            "model.img_encoder.depths[0]", "outside")


def test_sizes_that_do_not_match_the_weights_are_refused_without_allocating(tmp_path, tiny_checkpoint):
    """5 M words x 64 would be 1.3 GB of embeddings: the model is compared with the file on the meta device."""
    path = crafted(tmp_path, tiny_checkpoint,
                   lambda c: c["model"]["text_encoder"]["hf_overrides"].update(vocab_size=5_000_000))
    # VmHWM: this process image's peak resident memory (ru_maxrss would also count pytest's own peak at the fork)
    code = ("import re, sys\nfrom ovseg.cli import main\nstatus = main(sys.argv[1:])\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, "convert", str(path), str(tmp_path / "o.safetensors")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "word_embeddings.weight' has shape (30522, 64), the model expects (5000000, 64)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert int(result.stdout.split()[-1]) < 1_000_000  # kB: the process never held 1 GB
    assert not (tmp_path / "o.safetensors").exists()


def test_an_image_size_other_than_the_weights_names_the_tensor(tmp_path, tiny_checkpoint, capsys):
    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint,
                                      lambda c: c["model"]["img_encoder"].update(embed_dim=96)),
            "img_encoder", "has shape", "the model expects")


# ------------------------------------------------------------------------------------- not what it claims
def test_a_config_that_is_not_json(tmp_path, tiny_checkpoint, capsys):
    path = crafted(tmp_path, tiny_checkpoint, lambda c: None, config_text='{"model": {"img_encoder": ')
    refused(capsys, tmp_path, path, "not valid JSON")
    path = crafted(tmp_path, tiny_checkpoint, lambda c: None, name="list.safetensors", config_text="[1, 2, 3]")
    refused(capsys, tmp_path, path, "not a mapping")
    path = crafted(tmp_path, tiny_checkpoint, lambda c: None, name="deep.safetensors", config_text="[" * 100_000)
    refused(capsys, tmp_path, path, "not valid JSON")


def test_a_header_claiming_more_bytes_than_the_file_holds(tmp_path, capsys):
    header = json.dumps({"w": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 40_000_000_000]},
                         "__metadata__": {"format": "ovseg/1", "config": "{}"}}).encode()
    path = tmp_path / "liar.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    refused(capsys, tmp_path, path, "not a readable safetensors file")


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_pth_whose_pickle_calls_os_system_is_refused(tmp_path, capsys, zipped):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _RunsACommand(marker)}, path,
               _use_new_zipfile_serialization=zipped)
    refused(capsys, tmp_path, path, "refused", "arbitrary code")
    assert not marker.exists()


def test_a_stored_config_without_a_model_section(tmp_path, tiny_checkpoint, capsys):
    refused(capsys, tmp_path, crafted(tmp_path, tiny_checkpoint, lambda c: c.pop("model")), "no 'model' section")


def test_the_user_may_still_choose_a_text_encoder_on_the_command_line(tmp_path, tiny_checkpoint):
    """The boundary is the file: --opts (the user's words) may name what a checkpoint may not."""
    from ovseg.checkpoints import load_model

    model, cfg = load_model(tiny_checkpoint, opts=["model.text_encoder.hf_overrides.hidden_dropout_prob=0.0"])
    assert cfg.model.text_encoder.hf_overrides.hidden_dropout_prob == 0.0
    assert model.text_encoder.transformer.config.hidden_dropout_prob == 0.0


# ------------------------------------------------------------------------------- files a file names
def test_a_checkpoint_naming_a_backbone_file_never_makes_ovseg_read_it(tmp_path, tiny_checkpoint, capsys):
    """``model.img_encoder.init_checkpoint`` (and the original's alias) is how the user's training starts:
    a file's stored value is dropped, whatever reads the file (convert, demo, a stage-2 start)."""
    from ovseg.checkpoints import load_model
    from ovseg.config import load_config
    from ovseg.engine.stages import build_model
    from ovseg.factory import preset_path

    bait = tmp_path / "bait_backbone.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 64)}, bait)
    opened: list[str] = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                     if event == "open" and args and bait.name in str(args[0]) else None)

    def edit(config):
        config["model"]["img_encoder"].update(init="dino", init_checkpoint=str(bait), freeze_backbone=True,
                                              imgnet_pretrained="dino", imgnet_pretrained_checkpoint=str(bait))

    path = crafted(tmp_path, tiny_checkpoint, edit)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(path), str(out)]) == 0, capsys.readouterr().err
    _, model_cfg = load_model(path, training=True)
    ie = model_cfg.model.img_encoder
    assert (ie.init, ie.init_checkpoint, ie.imgnet_pretrained, ie.imgnet_pretrained_checkpoint,
            ie.freeze_backbone) == ("none", None, None, None, False)
    assert str(bait) not in json.dumps(stored(out)[1])
    stage2 = load_config(preset_path("tiny"), ["train.stage=2", "model.use_maskloss=true",
                                                 f"checkpoint.stage1_checkpoint={path}"])
    build_model(stage2, torch.device("cpu"))
    assert opened == [] and SECRET not in capsys.readouterr().err
