"""Validation during training: the scenes' split by default, or any benchmark of the evaluation registry,
scored with the same numbers as ``ovseg.evaluate``."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from test_eval_datasets import write_ade, write_voc

from ovseg.checkpoints import load_model
from ovseg.config import load_config
from ovseg.data.scenes.dataset import class_names
from ovseg.engine.trainer import train
from ovseg.engine.validate import EvalSetValidator, SceneValidator, build_validator, evaluate_scenes
from ovseg.errors import OvsegError
from ovseg.evaluation import evaluate
from ovseg.factory import create_model, preset_path
from ovseg.inference import Segmenter

SMALL = ["data.scenes.train_size=32", "data.scenes.val_size=2", "data.batch_size=8", "data.image_size=32",
         "model.img_encoder.img_size=32", "train.log_every=1", "train.warmup_epochs=0", "checkpoint.every_steps=0"]
HARNESS = ["evaluate.seg.short_side=32", "evaluate.seg.crop_size=32", "evaluate.seg.stride=32"]


def tiny_cfg(extra: list[str] = ()):
    return load_config(preset_path("tiny"), SMALL + HARNESS + list(extra))


def test_a_two_step_training_validates_on_a_voc_folder_with_the_evaluation_numbers(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    cfg = tiny_cfg(["evaluate.val_dataset=voc", f"evaluate.seg.data_root={root}", "train.max_steps=2",
                    "evaluate.val_every_steps=1", "evaluate.val_bg_thresholds=[0.3,0.9]"])
    result = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_miou" in r]
    assert [r["step"] for r in val] == [1, 2] and all(r["val_bg_thresh"] in (0.3, 0.9) for r in val)
    assert result.best is not None and result.best_val_miou == max(r["val_miou"] for r in val)
    # the last validation scored the final weights: ovseg.evaluate on them gives the same mIoU
    model, _ = load_model(result.final)
    segmenter = Segmenter(model, cfg.evaluate.seg)
    mious = {t: evaluate(segmenter, "voc", root, seg_cfg=OmegaConf.merge(cfg.evaluate.seg, {"bg_thresh": t}),
                         num_workers=0, progress=False).miou for t in (0.3, 0.9)}
    assert val[-1]["val_miou"] == max(mious.values())
    assert mious[val[-1]["val_bg_thresh"]] == val[-1]["val_miou"]


def test_the_validator_follows_the_config():
    assert isinstance(build_validator(tiny_cfg()), SceneValidator)  # scenes data: their split, as before
    assert build_validator(tiny_cfg(["data.type=webdataset"])) is None  # a caption corpus has no labels
    with pytest.raises(OvsegError, match="unknown"):
        build_validator(tiny_cfg(["evaluate.val_dataset=imagenet"]))


def test_a_missing_benchmark_folder_fails_before_training(tmp_path):
    cfg = tiny_cfg(["evaluate.val_dataset=voc", f"evaluate.seg.data_root={tmp_path / 'nowhere'}",
                    "train.max_steps=1"])
    with pytest.raises(OvsegError, match="nowhere"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_scene_validator_reports_the_best_threshold_of_evaluate_scenes():
    cfg = tiny_cfg(["evaluate.val_bg_thresholds=[0.2,0.5,0.9]"])
    torch.manual_seed(0)
    model = create_model(cfg).train()
    validator = SceneValidator(cfg)
    metrics = validator(model)
    results = evaluate_scenes(model, validator.dataset, class_names(), [0.2, 0.5, 0.9], 32,
                              cfg.evaluate.seg)
    best = max(results, key=lambda t: results[t]["miou"])
    assert metrics == {"miou": results[best]["miou"], "bg_thresh": best} and model.training


def test_a_benchmark_without_background_is_scored_once_and_leaves_training_mode(tmp_path):
    root = write_ade(tmp_path / "ade")
    cfg = tiny_cfg([f"evaluate.seg.data_root={root}"])
    torch.manual_seed(0)
    model = create_model(cfg).train()
    metrics = EvalSetValidator("ade20k", cfg.evaluate.seg, [0.3, 0.9])(model)
    assert metrics["bg_thresh"] is None and 0 <= metrics["miou"] <= 100
    assert model.training


def write_class_folders(root, names=("ball", "box", "tent"), per_class=2):
    """ImageNet's layout: one sub-folder per class, a few small PNG photos each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    classes = root.parent / "classes.txt"
    classes.write_text("".join(f"{n}\n" for n in names))
    return root, classes


def test_epoch_validation_scores_segmentation_and_classification_and_keeps_both_bests(tmp_path):
    """The original's schedule: every epoch, VOC mIoU and zero-shot top-1/top-5, best_miou and best_top1 kept."""
    from ovseg.evaluation import evaluate_classification

    voc = write_voc(tmp_path / "VOC2012")
    cls_root, classes = write_class_folders(tmp_path / "cls")
    cfg = tiny_cfg(["data.scenes.train_size=16", "train.epochs=2", "evaluate.val_every_epochs=1",
                    "evaluate.val_dataset=voc", f"evaluate.seg.data_root={voc}",
                    f"evaluate.cls.data_root={cls_root}", f"evaluate.cls.classes={classes}",
                    "evaluate.cls.resize=32", "evaluate.cls.crop_size=32"])
    result = train(cfg, tmp_path / "run")
    assert result.steps == 4  # 16 samples / batch 8 = 2 steps per epoch
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_top1" in r]
    assert [r["step"] for r in val] == [2, 4] and [r["epoch"] for r in val] == [1.0, 2.0]
    assert all("val_miou" in r and 0 <= r["val_top5"] <= 100 for r in val)
    assert result.best.name == "best_miou.safetensors" and result.best_val_top1 == max(r["val_top1"] for r in val)
    best_top1 = tmp_path / "run" / "best_top1.safetensors"
    assert best_top1.is_file()
    plot = tmp_path / "run" / "training.png"  # the losses and both validations, drawn after each validation
    assert plot.is_file() and plot.stat().st_size > 10_000
    # the last record scored the final weights: the classification API gives the same numbers on them
    model, _ = load_model(result.final)
    again = evaluate_classification(model, cfg.evaluate.cls, progress=False)
    assert (again.top1, again.top5) == (val[-1]["val_top1"], val[-1]["val_top5"])


def test_a_class_folder_outside_the_name_list_fails_before_training(tmp_path):
    cls_root, _ = write_class_folders(tmp_path / "cls")
    other = tmp_path / "other.txt"
    other.write_text("ball\nbox\n")
    cfg = tiny_cfg(["train.max_steps=1", f"evaluate.cls.data_root={cls_root}", f"evaluate.cls.classes={other}"])
    with pytest.raises(OvsegError, match="tent"):
        train(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()
