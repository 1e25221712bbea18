"""The paper's pipeline end to end at toy size (examples/rehearsal.py): corpus -> prepare -> stage 1 from a
DINO-format file with segmentation and classification validation -> stage 2 from stage 1's best -> eval, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

ROOT = Path(__file__).parents[1]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_rehearsal_runs_every_step_of_the_recipe(tmp_path):
    out = tmp_path / "rehearsal"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "rehearsal.py"), "--output", str(out),
                          "--samples", "24", "--epochs", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "rehearsal passed" in run.stdout
    # img2dataset-style shards went through `ovseg prepare` (entities and the stage-2 pair index)
    assert sorted(p.name for p in (out / "corpus").glob("*.tar")) == ["00000.tar", "00001.tar"]
    assert any((out / "prepared").glob("*.tar"))
    # stage 1 started from the DINO-format file: every backbone tensor of it was used (all but cls_token)
    assert "backbone init:" in run.stderr and "unused: cls_token" in run.stderr
    for stage in ("stage1", "stage2"):
        val = [r for r in records(out / stage / "metrics.jsonl") if "val_miou" in r]
        assert val and all({"val_top1", "val_top5", "val_bg_thresh"} <= set(r) for r in val), stage
        assert (out / stage / "best_miou.safetensors").is_file() and (out / stage / "best_top1.safetensors").is_file()
    # stage 2 started from stage 1's best_miou checkpoint and trained the momentum encoder's copy
    with safe_open(str(out / "stage2" / "final.safetensors"), "pt") as f:
        assert any(k.startswith("img_encoder_momentum.") for k in f.keys())
    voc = json.loads((out / "eval_voc" / "results.json").read_text())
    assert voc["num_images"] == 6 and 0 <= voc["miou"] <= 100
    cls = json.loads((out / "eval_cls" / "results.json").read_text())
    assert 0 <= cls["top1"] <= cls["top5"] <= 100
    assert len(list((out / "demo" / "input_pred_label").iterdir())) == 6
