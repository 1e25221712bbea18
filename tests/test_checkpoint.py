"""Checkpoints: the official .pth (full size, every key of the TSV), ovseg's format, and bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import ovseg
from ovseg.errors import CheckpointError

DATA = Path(__file__).parent / "data"


def official_state_dict(rows: str = "stage2") -> dict[str, torch.Tensor]:
    """Random values for every key and shape of official-state-dict.tsv (651 rows)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for line in (DATA / "official-state-dict.tsv").read_text().splitlines()[1:]:
        key, shape, dtype, present = line.split("\t")
        if rows not in present and "eval" not in present:
            continue
        dims = [] if shape == "scalar" else [int(s) for s in shape.split("x")]
        if dtype == "int64":
            state[key] = torch.arange(dims[-1]).reshape(dims) if dims else torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(dims, generator=g) + 0.5
        else:
            state[key] = torch.randn(dims, generator=g) * 0.02
    state["logit_scale"] = torch.tensor(float(np.log(1 / 0.07)))
    return state


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory) -> Path:
    """A full-size official-style stage-2 checkpoint with a pickled OmegaConf config and optimizer state."""
    config = OmegaConf.load(DATA / "official-config-stage2.yaml")
    OmegaConf.set_struct(config, True)
    ckpt = {"model": official_state_dict(), "config": config, "epoch": 9, "max_miou": np.float64(53.8),
            "max_accuracy": 0.0, "metrics": {"max_accuracy": 0.0, "max_miou": np.float64(53.8)},
            "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-6, "params": [0, 1]}]},
            "lr_scheduler": {"last_epoch": 9}}
    path = tmp_path_factory.mktemp("official") / "best_miou.pth"
    torch.save(ckpt, path)
    return path


def test_every_key_of_the_official_tsv_is_read(official_pth, caplog):
    state = official_state_dict()
    assert len(state) == 650 + 1  # 650 model keys (+ position_ids of transformers 4.21)
    caplog.set_level("INFO")
    model, cfg = ovseg.load_model(official_pth, training=True)
    own = model.state_dict()
    for key, value in state.items():
        if key in own:
            assert torch.equal(own[key].reshape(value.shape), value), key
    left_out = set(state) - set(own)
    assert left_out == {"logit_scale_mask", "text_encoder.transformer.embeddings.position_ids"} | {
        k for k in state if ".assign." in k and k.startswith("multimodal_groupingblock")}
    assert cfg.model.proj_inner_dim == 4096 and cfg.model.img_encoder.num_heads == [8, 8]


def test_official_checkpoint_loads_for_evaluation_and_produces_a_label_map(official_pth, photos, caplog):
    caplog.set_level("INFO")
    seg = ovseg.Segmenter.from_checkpoint(official_pth)
    assert "training-only keys" in caplog.text and "never reads" in caplog.text
    assert not hasattr(seg.model, "img_encoder_momentum")
    image = photos["chelsea"][:200:2, :300:2]  # 100 x 150: short side 448 -> one 448 x 672 image, 2 windows
    pred = seg.predict(image, ["cat", "dog", "sofa"])
    assert pred.labels.shape == (100, 150)
    assert pred.labels.max() <= 3


def test_ovseg_format_round_trips_bit_exactly(tmp_path):
    torch.manual_seed(1)
    cfg = ovseg.load_config(ovseg.factory.preset_path("tiny"), ["model.use_entityloss=true"])
    model = ovseg.create_model(cfg)
    ovseg.save_model(model, cfg, tmp_path / "a.safetensors")
    loaded, loaded_cfg = ovseg.load_model(tmp_path / "a.safetensors", training=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert OmegaConf.to_container(loaded_cfg.model) == OmegaConf.to_container(cfg.model)
    ovseg.save_model(loaded, loaded_cfg, tmp_path / "b.safetensors")
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_convert_cli_writes_a_loadable_safetensors(reference_weights, tmp_path):
    out = tmp_path / "ref.safetensors"
    assert cli("convert", str(reference_weights), str(out)).returncode == 0
    model, _ = ovseg.load_model(out)
    ref, _ = ovseg.load_model(reference_weights)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovseg", *args], capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_checkpoint(tmp_path):
    one_line_error(cli("convert", str(tmp_path / "nope.pth"), str(tmp_path / "o.safetensors")), "nope.pth", "not found")


def test_truncated_checkpoints(tmp_path, tiny_checkpoint):
    pth = tmp_path / "t.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, pth)
    pth.write_bytes(pth.read_bytes()[:300])
    one_line_error(cli("convert", str(pth), str(tmp_path / "o.safetensors")), "t.pth", "truncated or corrupt")
    st = tmp_path / "t.safetensors"
    st.write_bytes(Path(tiny_checkpoint).read_bytes()[:5000])
    one_line_error(cli("convert", str(st), str(tmp_path / "o.safetensors")), "t.safetensors")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    one_line_error(cli("convert", str(empty), str(tmp_path / "o.safetensors")), "empty.pth", "empty or truncated")


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello, this is not a checkpoint at all\n")
    one_line_error(cli("convert", str(text), str(tmp_path / "o.safetensors")), "notes.pth", "not a checkpoint")


def test_a_checkpoint_of_another_architecture_names_the_key_and_both_shapes(tmp_path, reference_weights):
    state = load_file(reference_weights)
    state["img_encoder.layers.0.group_token"] = torch.zeros(1, 16, 48)
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"group_token' has shape \(1, 16, 48\), the model expects \(1, 16, 64\)"):
        ovseg.load_model(tmp_path / "other.pth")
    torch.save({"model": {"conv.weight": torch.zeros(3)}}, tmp_path / "alien.pth")
    one_line_error(cli("convert", str(tmp_path / "alien.pth"), str(tmp_path / "o.safetensors")), "alien.pth")


class _Exploit:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_a_checkpoint_needing_arbitrary_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Exploit()}, path)
    result = cli("convert", str(path), str(tmp_path / "o.safetensors"))
    one_line_error(result, "evil.pth", "refused", "arbitrary code")
    assert "this would run" not in result.stdout


def test_format_is_recognised_whatever_the_header_length_byte(tmp_path):
    from ovseg.checkpoints.files import sniff_format

    for pad in range(0, 264):  # header lengths (multiples of 8) whose low byte is 0x80 ('\x80' = pickle) or 0x50 ('P')
        path = tmp_path / f"w{pad}.safetensors"
        from safetensors.torch import save_file

        save_file({"x" * (pad + 1): torch.zeros(1)}, path, metadata={"format": "ovseg/1"})
        assert sniff_format(path) == "safetensors", pad
