"""The evaluation loop: hand-computed mIoU through a stub predictor, results.json, the harness predictor
against ``Segmenter.predict``, and end-to-end runs of ``ovseg eval`` / ``main_seg`` with the tiny checkpoint."""

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
from test_eval_datasets import H, W, label_map, png, write_ade, write_voc

import ovseg
from ovseg.cli import main as cli_main
from ovseg.config import schema
from ovseg.errors import OvsegError
from ovseg.evaluation import HarnessPredictor, SegDataset, evaluate, find_samples, get_eval_set, load_eval_config

REPO = Path(__file__).resolve().parents[1]


def stub(predictions: dict[str, np.ndarray]):
    """A predictor returning fixed label maps by sample name."""
    return lambda samples: [torch.from_numpy(predictions[s.name].astype(np.int64)) for s in samples]


def voc_cfg():
    return load_eval_config("voc").evaluate.seg


def test_hand_computed_voc_miou_and_results_json(tmp_path):
    root = write_voc(tmp_path / "VOC2012", values=((0, 1, 15), (0, 255, 20)))
    # image 1: bands of 4 rows: 0 / 1 / 15; predicted 0 / 1 / 1   (the last band wrong)
    # image 2: bands 0 / 255 / 20;           predicted 0 / 7 / 0   (7 on ignored pixels; 20 missed)
    preds = {"2007_000033": label_map([0, 1, 1]), "2007_000042": label_map([0, 7, 0])}
    result = evaluate(dataset="voc", data_root=root, predictor=stub(preds), seg_cfg=voc_cfg(),
                      output_dir=tmp_path / "out", num_workers=0, progress=False)
    band = 4 * W
    # background: gt 2 bands, pred 3 bands (incl. image 2's last band), inter 2 -> 2/3
    # aeroplane (1): gt 1 band, pred 2 bands, inter 1 -> 1/2; person (15): 0; monitor (20): 0
    expected = {"background": 2 / 3, "aeroplane": 1 / 2, "person": 0.0, "monitor": 0.0}
    assert result.miou == pytest.approx(100 * sum(expected.values()) / 4)
    for name, iou in expected.items():
        assert result.per_class_iou[name] == pytest.approx(100 * iou)
    assert result.per_class_iou["cat"] is None  # predicted only on ignored pixels
    assert result.aacc == pytest.approx(100 * 3 * band / (5 * band))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["miou"] == pytest.approx(result.miou) and saved["num_images"] == 2
    assert list(saved["per_class_iou"])[:2] == ["background", "aeroplane"] and len(saved["per_class_iou"]) == 21
    assert saved["settings"]["seg"]["bg_thresh"] == 0.95 and saved["settings"]["seg"]["stride"] == 224
    assert saved["settings"]["data_root"] == str(root)
    assert saved["settings"]["precision"] == "auto (fp32 through oneDNN)"  # what the default ran as here
    assert "monitor" in result.table() and "mIoU 29.17" in result.summary()


def test_hand_computed_ade20k_with_reduce_zero_label(tmp_path):
    root = write_ade(tmp_path)  # files: (0, 1, 3) and (150, 2, 0) -> classes (255, 0, 2) and (149, 1, 255)
    preds = {"ADE_val_00000001": label_map([5, 0, 0]), "ADE_val_00000002": label_map([149, 149, 3])}
    result = evaluate(dataset="ade20k", data_root=root, predictor=stub(preds), seg_cfg=schema().evaluate.seg,
                      num_workers=0, progress=False)
    # image 1: gt (ignored, wall, sky), pred (5, wall, wall); image 2: gt (flag, building, ignored),
    # pred (flag, flag, 3). wall: gt 1 band, pred 2, inter 1 -> 1/2; flag likewise 1/2; sky and building:
    # gt 1 band, never predicted -> 0; ceiling (5) and floor (3) predicted on ignored pixels only -> n/a
    assert result.per_class_iou["wall"] == pytest.approx(50.0)
    assert result.per_class_iou["flag"] == pytest.approx(50.0)
    assert result.per_class_iou["building"] == 0.0 and result.per_class_iou["sky"] == 0.0
    assert result.per_class_iou["ceiling"] is None and result.per_class_iou["floor"] is None
    assert result.miou == pytest.approx(25.0)


def test_limit_and_invalid_label_policies(tmp_path, caplog):
    root = write_voc(tmp_path, values=((0, 1, 30), (0, 1, 1)))
    preds = {"2007_000033": label_map([0, 1, 1]), "2007_000042": label_map([0, 1, 1])}
    run = dict(dataset="voc", data_root=root, predictor=stub(preds), seg_cfg=voc_cfg(), num_workers=0,
               progress=False)
    one = evaluate(limit=1, invalid="ignore", **run)
    assert one.num_images == 1 and one.miou == pytest.approx(100.0)
    mmseg = evaluate(**run)  # image 1's third band (30) predicted as 1: a false positive for class 1
    assert mmseg.per_class_iou["aeroplane"] == pytest.approx(100 * 3 / 4)
    assert mmseg.invalid_labels == {"pixels": 4 * W, "images": 1, "values": [30],
                                    "examples": [str(root / "SegmentationClass" / "2007_000033.png")]}
    assert "outside 0..20 and 255 (values [30]" in caplog.text
    assert evaluate(invalid="ignore", **run).per_class_iou["aeroplane"] == pytest.approx(100.0)
    with pytest.raises(OvsegError, match=r"2007_000033.png: 64 pixels carry labels outside .* \[30\]"):
        evaluate(invalid="error", **run)


def test_coco_object_with_stuff_labels_gives_a_hint(tmp_path, caplog):
    root = tmp_path / "coco"
    img = root / "images" / "val2017" / "000000000139.jpg"
    img.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(img)
    png(root / "annotations" / "val2017" / "000000000139_instanceTrainIds.png", label_map([0, 1, 120]))
    evaluate(dataset="coco", data_root=root, predictor=stub({"000000000139": label_map([0, 0, 0])}),
             seg_cfg=schema().evaluate.seg, num_workers=0, progress=False)
    assert "COCO-Stuff labels" in caplog.text and "ovseg convert-coco-object" in caplog.text


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    """The tiny model with the harness at half scale (224/224/112: several windows, fast)."""
    small = ["evaluate.seg.short_side=224", "evaluate.seg.crop_size=224", "evaluate.seg.stride=112"]
    return ovseg.Segmenter.from_checkpoint(tiny_checkpoint, seg_cfg=load_eval_config("voc", opts=small).evaluate.seg)


def test_harness_predictor_equals_segmenter_predict(tmp_path, segmenter, photos):
    root = tmp_path / "VOC2012"
    write_voc(root, stems=("a", "b", "c"), values=((0,), (0,), (0,)))
    for stem, key, step in (("a", "coffee", 5), ("b", "chelsea", 4), ("c", "astronaut", 7)):
        rgb = photos[key][::step, ::step]
        Image.fromarray(rgb).save(root / "JPEGImages" / f"{stem}.jpg")
        png(root / "SegmentationClass" / f"{stem}.png", np.zeros(rgb.shape[:2], dtype=np.uint8))
    eval_set = get_eval_set("voc")
    _, paths = find_samples(eval_set, root)
    samples = [SegDataset(eval_set, paths, short_side=224).load(i) for i in range(3)]
    assert [len(HarnessPredictor(segmenter, ["cat"], None).boxes(s)) for s in samples] == [2, 3, 1]
    classes = list(eval_set.classes)
    expected = [segmenter.predict(str(p.image), classes).labels for p in paths]
    for batch in (1, 3, 16):
        segmenter.cfg.batch_crops = batch
        got = HarnessPredictor(segmenter, classes, 0.95)(samples)
        assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    segmenter.cfg.batch_crops = 8


def test_background_threshold_is_required_where_scored(tmp_path, segmenter):
    root = write_voc(tmp_path)
    cfg = load_eval_config("voc", opts=["evaluate.seg.bg_thresh=null"]).evaluate.seg
    with pytest.raises(OvsegError, match="scores a background class"):
        evaluate(segmenter, data_root=root, seg_cfg=cfg, num_workers=0, progress=False)


def test_cli_end_to_end_with_tiny_checkpoint(tmp_path, tiny_checkpoint, capsys):
    root = write_voc(tmp_path / "VOCdevkit" / "VOC2012")
    out = tmp_path / "out"
    rc = cli_main(["eval", "--dataset", "voc", "--data-root", str(tmp_path / "VOCdevkit"), "--resume",
                   str(tiny_checkpoint), "--output", str(out), "--workers", "1", "--no-progress", "--device", "cpu",
                   "--batch-crops", "4", "--opts", "evaluate.seg.top_k=3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "background" in printed and "voc: mIoU" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["num_images"] == 2 and 0.0 <= saved["miou"] <= 100.0
    assert saved["settings"]["seg"]["top_k"] == 3 and saved["settings"]["seg"]["batch_crops"] == 4
    assert saved["settings"]["data_root"] == str(root) and saved["settings"]["checkpoint"] == str(tiny_checkpoint)


def test_cli_bad_data_root_is_one_line(tmp_path, tiny_checkpoint, capsys):
    write_voc(tmp_path)
    rc = cli_main(["eval", "--dataset", "context", "--data-root", str(tmp_path), "--resume", str(tiny_checkpoint),
                   "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "has no 'SegmentationClassContext/'" in err


def test_main_seg_and_script(tmp_path, tiny_checkpoint):
    root = write_ade(tmp_path / "ade")
    sys.path.insert(0, str(REPO))
    try:
        import main_seg
    finally:
        sys.path.remove(str(REPO))
    out = tmp_path / "seg_out"
    rc = main_seg.main(["--cfg", str(REPO / "configs" / "test_ade20k.yml"), "--resume", str(tiny_checkpoint),
                        "--data-root", str(root), "--output", str(out), "--tag", "t1", "--device", "cpu"])
    assert rc == 0
    saved = json.loads((out / "t1" / "results.json").read_text())
    assert saved["dataset"] == "ade20k" and len(saved["per_class_iou"]) == 150
    assert saved["settings"]["seg"]["bg_thresh"] is None
    env = {**os.environ, "OUTPUT": str(tmp_path / "script_out")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "test_ade20k.sh"), str(tiny_checkpoint), str(root),
                           "--limit", "1", "--device", "cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "script_out" / "results.json").read_text())["num_images"] == 1
