"""verify-reference: the shipped set passes, and a tampered set fails loudly."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ovseg.model.text import build_tokenizer, minilm_dir
from ovseg.verify import verify_reference

REFERENCE = Path(__file__).parent / "data" / "reference"


def test_shipped_reference_set_passes_from_the_cli():
    result = subprocess.run([sys.executable, "-m", "ovseg", "verify-reference", str(REFERENCE)],
                            capture_output=True, text=True, timeout=600)
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
    result = subprocess.run([sys.executable, "-m", "ovseg", "verify-reference", str(folder), "--failures-only"],
                            capture_output=True, text=True, timeout=600)
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
