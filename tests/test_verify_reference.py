"""verify-reference: the shipped set passes, and a tampered set fails loudly."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovseg.errors import OvsegError
from ovseg.model.text import build_tokenizer, minilm_dir
from ovseg.verify import compare, format_table, infer_step, strided_steps, verify_reference

REFERENCE = Path(__file__).parent / "data" / "reference"


def test_shipped_reference_set_passes_from_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "ovseg", "verify-reference", str(REFERENCE)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "all outputs match" in result.stdout
    manifest = json.loads((REFERENCE / "manifest.json").read_text())
    ok_rows = [line for line in result.stdout.splitlines() if line.rstrip().endswith(" ok") or " ok  (" in line]
    assert len(ok_rows) >= len(manifest["outputs"])  # every output (taps included) is verified, none skipped
    assert "loss.mask_model.value" in result.stdout and "not yet" not in result.stdout


def tampered_copy(tmp_path: Path, name: str, change) -> Path:
    folder = tmp_path / "ref"
    shutil.copytree(REFERENCE, folder)
    io = load_file(folder / "io.safetensors")
    io[name] = change(io[name])
    save_file(io, folder / "io.safetensors")
    return folder


def test_a_wrong_expected_output_fails(tmp_path):
    folder = tampered_copy(tmp_path, "seg.slide.bg095.final_logits_strided", lambda t: t + 1e-3)
    rows = {r.name: r for r in verify_reference(folder)}
    assert rows["seg.slide.bg095.final_logits_strided"].status == "FAIL"
    assert rows["seg.slide.bg035.final_logits_strided"].status == "ok"
    result = subprocess.run(
        [sys.executable, "-m", "ovseg", "verify-reference", str(folder), "--failures-only"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1 and "FAILED" in result.stdout


def test_a_changed_label_pixel_fails_unless_listed_as_fragile(tmp_path):
    def flip(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[0, 0] = (t[0, 0] + 1) % 7
        return t

    folder = tampered_copy(tmp_path, "seg.slide.bg095.label_map", flip)
    rows = {r.name: r for r in verify_reference(folder)}
    assert rows["seg.slide.bg095.label_map"].status == "FAIL"


def test_an_optional_entry_left_out_is_not_required(tmp_path):
    folder = tmp_path / "ref"
    shutil.copytree(REFERENCE, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"] = [e for e in manifest["outputs"] if ".tap." not in e["name"] and "whole" not in e["name"]]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rows = verify_reference(folder)
    assert all(r.status == "ok" for r in rows)
    assert not any(".tap." in r.name for r in rows)


def test_offline_vocabulary_is_the_bert_base_uncased_wordpiece():
    vocab = minilm_dir() / "vocab.txt"
    assert hashlib.md5(vocab.read_bytes()).hexdigest() == "64800d5d8528ce344256daf115d4965e"
    tok = build_tokenizer("bert-base-uncased")
    assert len(tok) == 30522
    ids = tok(["A [MASK] photo"])["input_ids"][0]
    assert ids == [101, 1037, 103, 6302, 102]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 100


def restrided_copy(tmp_path: Path, factor: int, shape: list[int] | None = None) -> tuple[Path, list[str]]:
    """The reference with every strided entry (rows/cols 0::8) taken every ``factor``-th again, i.e. at step
    8·factor of the full field, exactly; no entry states its step. ``shape`` overrides the first entry's."""
    folder = tmp_path / "ref"
    shutil.copytree(REFERENCE, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    io = load_file(folder / "io.safetensors")
    strided = [e for e in manifest["outputs"] if e["name"].endswith("_strided")]
    for entry in strided:
        assert entry.get("strided_step", 8) == 8
        io[entry["name"]] = io[entry["name"]][..., ::factor, ::factor].contiguous()
        entry["shape"] = list(io[entry["name"]].shape)
        entry.pop("strided_step", None)
    if shape is not None:
        strided[0]["shape"] = shape
    save_file(io, folder / "io.safetensors")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, [e["name"] for e in strided]


def test_a_strided_entry_without_its_step_gets_it_from_its_shape(tmp_path):
    folder, strided = restrided_copy(tmp_path, 2)  # step 16: 448x672 -> 28x42, 400x600 -> 25x38
    assert strided_steps(json.loads((folder / "manifest.json").read_text())) == dict.fromkeys(strided, 16)
    rows = verify_reference(folder)
    assert all(r.status == "ok" for r in rows if ".tap." not in r.name), format_table(rows)
    assert {r.name for r in rows} >= set(strided)


def test_a_strided_shape_no_step_explains_is_a_one_line_error(tmp_path):
    folder, strided = restrided_copy(tmp_path, 2, shape=[7, 28, 41])  # ceil(672/s) is never 41
    with pytest.raises(OvsegError) as err:
        verify_reference(folder)
    assert strided[0] in str(err.value) and "no step fits" in str(err.value) and "\n" not in str(err.value)
    result = subprocess.run(
        [sys.executable, "-m", "ovseg", "verify-reference", str(folder)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"ovseg verify-reference: error: {strided[0]}: cannot infer strided_step")


def test_several_fitting_steps_are_an_error_naming_the_entry():
    assert infer_step("a", (50, 75), (400, 600)) == 8
    assert infer_step("a", (3, 5), (5, 9)) == 2
    with pytest.raises(OvsegError, match=r"^a: cannot infer strided_step .*steps 5\.\.8 all fit"):
        infer_step("a", (1, 2), (5, 9))


def test_fragile_positions_are_excused_only_where_the_entry_lists_them():
    ref = torch.zeros(2, 4, 5)
    got = ref.clone()
    got[:, 1, 2] = 0.5  # a group near-tie moved to its second group: every channel at one position
    logits = {"name": "x.final_logits_strided", "shape": [2, 4, 5], "atol": 1e-5, "ref": ref}
    assert compare(logits, got).status == "FAIL"
    assert compare({**logits, "fragile_strided_yx": [[2, 1]]}, got).status == "FAIL"
    row = compare({**logits, "fragile_strided_yx": [[1, 2]]}, got)
    assert row.status == "ok" and row.diff == 0 and "1 fragile position" in row.note
    labels = torch.zeros(4, 5, dtype=torch.uint8)
    moved = labels.clone()
    moved[3, 0] = 2
    label_map = {"name": "x.label_map", "shape": [4, 5], "exact": True, "ref": labels}
    assert compare(label_map, moved).status == "FAIL"
    for field in ("fragile_yx_margin_below_1e-5", "fragile_yx_group_near_tie"):
        row = compare({**label_map, field: [[3, 0]]}, moved)
        assert row.status == "ok" and row.note == "1 fragile pixel(s) differ"
    moved[0, 0] = 1
    row = compare({**label_map, "fragile_yx_group_near_tie": [[3, 0]]}, moved)
    assert row.status == "FAIL" and row.note == "1 fragile pixel(s) differ; 1 value(s) differ"
