"""Saved predictions of an evaluation (``ovseg eval --save-predictions / --save-overlays``): one paletted PNG per
image named by the dataset's id, holding exactly the labels the evaluation scored, classes.json, side-by-side
pictures, and the refusals (a folder inside the dataset, an id leaving the output folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_datasets import H, W, label_map, write_cityscapes, write_voc

import ovseg
from ovseg.cli import main as cli_main
from ovseg.config import schema
from ovseg.errors import OvsegError
from ovseg.evaluation import evaluate, get_eval_set, load_eval_config
from ovseg.evaluation.saving import SaveOptions
from ovseg.viz.palette import dataset_palette

VOC_STEMS = ("2007_000033", "2007_000042", "2007_000061")
SMALL = ["evaluate.seg.bg_thresh=0.02", "evaluate.seg.short_side=224", "evaluate.seg.crop_size=224",
         "evaluate.seg.stride=112"]  # a threshold low enough that the random tiny model predicts classes
VOC_COLOURS = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # background, aeroplane, bicycle, bird


def recording(predictions: dict[str, np.ndarray], seen: dict[str, torch.Tensor]):
    """A predictor returning fixed label maps by sample name and remembering what it returned."""

    def predict(samples):
        out = [torch.from_numpy(predictions[s.name].astype(np.int64)) for s in samples]
        seen.update({s.name: o for s, o in zip(samples, out, strict=True)})
        return out

    return predict


def read_png(path) -> tuple[np.ndarray, Image.Image]:
    with Image.open(path) as img:
        img.load()
        return np.asarray(img), img


def test_predictions_are_paletted_pngs_named_by_id_with_the_scored_labels(tmp_path):
    root = write_voc(tmp_path / "VOC2012", stems=VOC_STEMS, values=((0, 1, 15), (0, 255, 20), (3, 3, 3)))
    preds = {VOC_STEMS[0]: label_map([0, 1, 1]), VOC_STEMS[1]: label_map([2, 20, 0]), VOC_STEMS[2]: label_map([3])}
    seen: dict[str, torch.Tensor] = {}
    out = tmp_path / "pred"
    result = evaluate(dataset="voc", data_root=root, predictor=recording(preds, seen), limit=2, num_workers=0,
                      seg_cfg=load_eval_config("voc").evaluate.seg, progress=False, save=SaveOptions(out))
    assert sorted(p.name for p in out.iterdir()) == ["2007_000033.png", "2007_000042.png", "classes.json"]
    for stem in VOC_STEMS[:2]:
        labels, img = read_png(out / f"{stem}.png")
        assert img.mode == "P" and labels.shape == (H, W)
        assert np.array_equal(labels, seen[stem].numpy()) and np.array_equal(labels, preds[stem])
        palette = np.array(img.getpalette()).reshape(-1, 3)
        assert palette[:4].tolist() == VOC_COLOURS and palette[255].tolist() == [224, 224, 192]  # VOC's own
    classes = json.loads((out / "classes.json").read_text())
    assert classes["dataset"] == "voc" and classes["background"] == 0
    assert classes["classes"][:3] == ["background", "aeroplane", "bicycle"] and len(classes["classes"]) == 21
    assert classes["palette"][:4] == VOC_COLOURS and len(classes["palette"]) == 21
    assert result.num_images == 2  # the options change nothing of the evaluation itself
    plain = evaluate(dataset="voc", data_root=root, predictor=recording(preds, {}), limit=2, num_workers=0,
                     seg_cfg=load_eval_config("voc").evaluate.seg, progress=False)
    assert plain.per_class_iou == result.per_class_iou


def test_ids_with_sub_folders_and_the_cityscapes_palette(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    preds = {"frankfurt/frankfurt_000000_000294": label_map([0, 18, 5]),
             "lindau/lindau_000000_000019": label_map([1, 1, 1])}
    out = tmp_path / "pred"
    evaluate(dataset="cityscapes", data_root=root, predictor=recording(preds, {}), seg_cfg=schema().evaluate.seg,
             num_workers=0, progress=False, save=SaveOptions(out))
    labels, img = read_png(out / "frankfurt" / "frankfurt_000000_000294.png")
    assert np.array_equal(labels, preds["frankfurt/frankfurt_000000_000294"])
    assert np.array(img.getpalette()).reshape(-1, 3)[:2].tolist() == [[128, 64, 128], [244, 35, 232]]
    classes = json.loads((out / "classes.json").read_text())
    assert classes["background"] is None and classes["classes"][0] == "road" and len(classes["palette"]) == 19


def test_overlays_show_the_first_images_side_by_side(tmp_path):
    root = write_voc(tmp_path / "VOC2012", stems=VOC_STEMS, values=((0, 1, 15), (0, 255, 20), (3, 3, 3)))
    preds = {stem: label_map([0, 1, 1]) for stem in VOC_STEMS}
    out = tmp_path / "show"
    evaluate(dataset="voc", data_root=root, predictor=recording(preds, {}), num_workers=0, progress=False,
             seg_cfg=load_eval_config("voc").evaluate.seg, save=SaveOptions(overlays=out, overlay_count=2))
    assert sorted(p.name for p in out.iterdir()) == ["2007_000033.png", "2007_000042.png"]
    picture, img = read_png(out / "2007_000033.png")
    assert img.mode == "RGB" and picture.shape[0] > H  # + the legend strip (which may be wider than the panels)
    assert (picture[:H, W:W + 8] == 255).all() and (picture[:H, 3 * W + 16:] == 255).all()
    photo = np.asarray(Image.open(root / "JPEGImages" / "2007_000033.jpg").convert("RGB"))
    assert np.array_equal(picture[:H, :W], photo)
    # the prediction's middle band is aeroplane: the photo blended half-way with VOC's dark red
    band = slice(H // 3 + 1, 2 * H // 3 - 1)
    expected = (photo[band].astype(int) * 128 + np.array([128, 0, 0]) * 128 + 128) >> 8
    assert np.array_equal(picture[band, 2 * W + 16:3 * W + 16], expected)


def test_a_folder_inside_the_dataset_is_refused_before_anything_runs(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    calls = []
    run = dict(dataset="voc", data_root=root, predictor=lambda s: calls.append(s), num_workers=0, progress=False,
               seg_cfg=load_eval_config("voc").evaluate.seg)
    with pytest.raises(OvsegError, match=r"^--save-predictions .*pred: inside the dataset folder .*VOC2012"):
        evaluate(save=SaveOptions(root / "pred"), **run)
    with pytest.raises(OvsegError, match="--save-overlays"):
        evaluate(save=SaveOptions(overlays=root / "SegmentationClass"), **run)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("../../escape\n")  # an image list's id
    for ext, folder in (("jpg", "JPEGImages"), ("png", "SegmentationClass")):
        (tmp_path / f"escape.{ext}").write_bytes((root / folder / f"2007_000033.{ext}").read_bytes())
    with pytest.raises(OvsegError, match="would be written outside"):
        evaluate(save=SaveOptions(tmp_path / "pred"), **run)
    assert calls == [] and not (root / "pred").exists() and not (tmp_path / "pred").exists()


@pytest.fixture(scope="module")
def small_segmenter(tiny_checkpoint):
    """The tiny model with the voc harness at half scale, as the CLI runs it below."""
    cfg = load_eval_config("voc", opts=SMALL).evaluate.seg
    return ovseg.Segmenter.from_checkpoint(tiny_checkpoint, seg_cfg=cfg)


def test_cli_saves_what_the_harness_predicts(tmp_path, tiny_checkpoint, small_segmenter, capsys):
    root = write_voc(tmp_path / "VOC2012")
    out = tmp_path / "pred"
    rc = cli_main(["eval", "--dataset", "voc", "--data-root", str(root), "--resume", str(tiny_checkpoint),
                   "--workers", "0", "--no-progress", "--device", "cpu", "--save-predictions", str(out),
                   "--opts", *SMALL])
    assert rc == 0
    classes = list(get_eval_set("voc").classes)
    found = set()
    for stem in ("2007_000033", "2007_000042"):
        labels, img = read_png(out / f"{stem}.png")
        expected = small_segmenter.predict(str(root / "JPEGImages" / f"{stem}.jpg"), classes).labels.numpy()
        assert img.mode == "P" and np.array_equal(labels, expected)
        found.update(np.unique(labels).tolist())
    assert len(found) > 1  # not only background: the comparison means something
    assert (img.getpalette()[:6]) == [0, 0, 0, 128, 0, 0]
    capsys.readouterr()
    rc = cli_main(["eval", "--dataset", "voc", "--data-root", str(root), "--resume", str(tiny_checkpoint),
                   "--no-progress", "--save-predictions", str(root / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "inside the dataset folder" in err and not (root / "out").exists()


def test_dataset_palette_is_vocs_colour_map_except_cityscapes():
    voc = dataset_palette("voc")
    assert voc.shape == (256, 3) and voc[:4].tolist() == VOC_COLOURS and voc[255].tolist() == [224, 224, 192]
    assert np.array_equal(dataset_palette("ade20k"), voc)
    assert dataset_palette("cityscapes")[18].tolist() == [119, 11, 32]
