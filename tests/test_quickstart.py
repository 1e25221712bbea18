"""ovseg quickstart end to end on a tiny budget: both stages, test evaluation, report files."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image

TINY = ["data.scenes.train_size=64", "data.scenes.val_size=4", "data.scenes.test_size=6", "data.batch_size=16",
        "data.image_size=32", "model.img_encoder.img_size=32", "model.img_encoder.embed_dim=32",
        "model.img_encoder.num_heads=[2,2]", "model.img_encoder.depths=[1,0]", "model.output_dim=32",
        "train.max_steps=2", "evaluate.val_every_steps=0", "evaluate.val_bg_thresholds=[0.5,0.9]"]


def test_quickstart_writes_results_plot_and_overlays(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ovseg", "quickstart", "--output", str(tmp_path), "--overlays", "2",
                           "--init", "scratch", "--opts", *TINY], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "zero-shot test mIoU" in done.stdout and "synonym" in done.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    assert {"miou", "miou_synonyms", "per_class_iou", "seconds", "settings"} <= set(report)
    assert len(report["per_class_iou"]) == 11 and report["test_images"] == 6 and report["stages"] == 2
    assert report["bg_thresh"] in (0.5, 0.9)  # chosen on validation
    assert report["selected_stage"] in (1, 2)
    assert report["refine"] == "pamr-local" and 0 <= report["miou_unrefined"] <= 100  # the same scoring, unrefined
    assert report["scoring"] == "patches" and 0 <= report["miou_paper_harness"] <= 100  # groups, unrefined
    assert report["paper_harness_bg_thresh"] in (0.5, 0.9)
    assert report["flip"] is True and report["rotate"] is True
    assert "patches scored, flip- and rotation-averaged, pamr-local refinement;" in done.stdout
    assert "the paper's harness" in done.stdout
    assert report["settings"]["stage2"]["checkpoint"]["stage1_checkpoint"].startswith(str(tmp_path / "stage1"))
    assert Image.open(tmp_path / "training.png").size[0] > 100
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["test_000.png", "test_001.png"]


def test_the_stage_with_the_better_validation_score_is_tested():
    from pathlib import Path

    from ovseg.engine.trainer import TrainResult
    from ovseg.quickstart import select_on_validation

    def result(val):
        return TrainResult(Path("."), Path("final"), Path("best"), val, 0.3, 10)

    one, two = result(24.4), result(21.2)
    assert select_on_validation(one, two) is one
    two = result(24.4)
    assert select_on_validation(one, two) is two  # a tie goes to stage 2
    assert select_on_validation(result(None), two) is two
