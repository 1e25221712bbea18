"""Pictures: palettes, overlays, class names, legends, group maps (numpy + PIL); the training plot (matplotlib)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ovseg.inference.segmenter import composed_group_maps
from ovseg.viz import (
    add_legend,
    blend,
    class_palette,
    colorize,
    draw_class_names,
    group_palette,
    overlay_labels,
    region_anchors,
    render_groups,
)
from ovseg.viz import overlay as overlay_module


def test_class_palette_is_voc_then_distinct():
    palette = class_palette(300)
    assert palette[0].tolist() == [0, 0, 0]  # background
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]  # VOC aeroplane, person
    assert len({tuple(c) for c in palette.tolist()}) == 300  # every class its own colour, the last one too


def test_group_palette_distinct():
    colours = group_palette(64)
    assert colours.shape == (64, 3) and len({tuple(c) for c in colours.tolist()}) == 64


def test_colorize_fast_path_equals_indexing():
    labels = np.random.default_rng(0).integers(0, 21, (37, 53)).astype(np.uint8)
    palette = class_palette(21)
    assert np.array_equal(colorize(labels, palette), palette[labels])
    assert np.array_equal(colorize(labels.astype(np.int64), palette), palette[labels])


def test_overlay_leaves_background_untouched_and_bands_agree(monkeypatch, photos):
    image = photos["coffee"]
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[100:300, 200:500] = 3
    out = overlay_labels(image, labels, class_palette(4))
    assert np.array_equal(out[labels == 0], image[labels == 0])
    expected = (image[labels == 3].astype(int) + class_palette(4)[3].astype(int) + 1) // 2
    assert np.abs(out[labels == 3].astype(int) - expected).max() <= 1
    monkeypatch.setattr(overlay_module, "BAND_PIXELS", 1000)  # many small bands: same picture
    assert np.array_equal(overlay_labels(image, labels, class_palette(4)), out)
    assert np.array_equal(blend(image, image), image)


def test_region_anchor_lies_inside_a_ring():
    yy, xx = np.mgrid[:200, :200]
    radius = np.hypot(yy - 100, xx - 100)
    labels = ((radius > 60) & (radius < 90)).astype(np.uint8)  # the centroid is outside the region
    ((x, y),) = region_anchors(labels).values()
    assert labels[y, x] == 1


def test_names_and_legend(photos):
    image = Image.fromarray(photos["astronaut"])
    labels = np.zeros((512, 512), np.uint8)
    labels[:256] = 1
    named = draw_class_names(image, region_anchors(labels), ["background", "person"])
    assert named.size == image.size and not np.array_equal(np.asarray(named), np.asarray(image))
    legend = add_legend(named, [("person", (192, 128, 128), 0.5), ("a very long class name", (0, 0, 128), 0.1)])
    assert legend.width == 512 and legend.height > 512
    assert np.array_equal(np.asarray(legend)[:512], np.asarray(named))
    tiny = Image.fromarray(photos["astronaut"][:10, :12])
    assert draw_class_names(tiny, {1: (5, 5)}, ["background", "person"]).size == (12, 10)
    assert add_legend(tiny, []) is tiny and add_legend(tiny, [("person", (1, 2, 3), 1.0)]).width > 12


def test_render_groups_resizes_to_the_photo(photos):
    image = photos["chelsea"]
    groups = np.arange(8, dtype=np.uint8).repeat(4).reshape(4, 8)
    out = render_groups(image, groups)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_composed_group_maps_chain_blocks():
    soft0 = torch.eye(4)[torch.tensor([0, 1, 2, 3, 0, 1])].t().reshape(1, 1, 4, 6)  # 6 patches (2×3) -> 4 groups
    soft1 = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]]).reshape(1, 1, 2, 4)  # 4 groups -> 2
    first, second = composed_group_maps([soft0, soft1], (2, 3), (2, 3))
    assert first.tolist() == [[0, 1, 2], [3, 0, 1]]
    assert second.tolist() == [[0, 1, 0], [1, 0, 1]]


# --- training.png (matplotlib) --------------------------------------------------------------------------------


def _stage(name, start, steps, parts=("contrast", "total"), val_steps=(), batch=100):
    from ovseg.viz.plot import StageCurves

    stage = StageCurves(name, start=start)
    for k, part in enumerate(parts):
        stage.losses[part] = ([start + s * batch for s in steps], [(k + 1) * 4.0 / (1 + s) for s in steps])
    stage.val_miou = ([start + s * batch for s in val_steps], [10.0 + s for s in val_steps])
    return stage


def _png(path):
    image = np.asarray(Image.open(path).convert("RGB"))
    return image, len(np.unique(image.reshape(-1, 3), axis=0))


def test_training_plot_two_stages_with_class_iou(tmp_path):
    from ovseg.viz.plot import write_training_plot

    stages = [
        _stage("stage1", 0, range(1, 41), val_steps=(20, 40)),
        _stage("stage2", 4000, range(1, 11), ("contrast", "mask", "total"), val_steps=(10,)),
    ]
    ious = {"names": {"car": 50.0, "dog": float("nan")}, "synonyms": {"car": 20.0, "dog": None}}
    path = write_training_plot(tmp_path / "training.png", stages, ious)
    image, colours = _png(path)
    assert image.shape == (750, 1300, 3) and colours > 50  # not blank
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training.png"]  # written atomically, nothing left over


def test_training_figure_marks_stages_keeps_legends_off_the_curves_and_logs_wide_losses():
    from ovseg.viz.plot import training_figure

    stages = [
        _stage("stage1", 0, range(1, 41), val_steps=(20, 40)),
        _stage("stage2", 4000, range(1, 11), val_steps=(10,)),
    ]
    figure = training_figure(stages, {"names": {"car": 50.0}})
    figure.canvas.draw()
    losses, val, bars = figure.axes
    assert losses.get_yscale() == "log"  # 8/1 ... 4/41: values 80x apart
    assert [a.get_title() for a in (losses, val, bars)] == [
        "training losses",
        "validation mIoU",
        "per-class IoU, test split",
    ]
    assert val.get_xlabel() == "training samples seen" and val.get_ylabel() == "mIoU (%)"
    for axes in (losses, val):
        boundaries = [line.get_xdata()[0] for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert boundaries == [4000]
        legend, box = axes.get_legend().get_window_extent(), axes.get_window_extent()
        assert legend.x0 >= box.x1  # outside the plotting area: it covers no curve
    assert [t.get_text() for t in bars.get_yticklabels()] == ["car"]
    narrow = training_figure([_stage("stage1", 0, range(10, 13))])
    assert narrow.axes[0].get_yscale() == "linear" and len(narrow.axes) == 2


def test_training_plot_one_stage_without_validation_and_a_single_point(tmp_path):
    from ovseg.viz.plot import training_figure, write_training_plot

    stages = [_stage("stage1", 0, [5])]
    path = write_training_plot(tmp_path / "one.png", stages)
    image, colours = _png(path)
    assert image.shape == (750, 850, 3) and colours > 20
    losses, val = training_figure(stages).axes
    assert [line.get_marker() for line in losses.get_lines()] == ["o", "o"]  # one point: drawn as a dot
    assert "no validation records" in [t.get_text() for t in val.texts]
    assert not [line for line in losses.get_lines() if line.get_linestyle() == "--"]  # one stage: no boundary
    empty = write_training_plot(tmp_path / "empty.png", [_stage("stage1", 0, [])])
    assert _png(empty)[0].shape == (750, 850, 3)


def test_quickstart_plot_counts_samples_over_both_stages(tmp_path):
    import json

    from ovseg.quickstart import stage_curves, write_plot

    for stage, records in {
        "stage1": [
            {"step": 10, "loss_total": 3.0, "loss_grad_norm": 9.0},
            {"step": 20, "loss_total": 2.0},
            {"step": 20, "val_miou": 12.5},
        ],
        "stage2": [
            {"step": 5, "loss_total": 1.5, "loss_mask": 0.5},
            {"step": 5, "val_miou": None},
            {"step": 5, "val_top1": 3.0},
        ],
    }.items():
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    one, two = stage_curves(tmp_path, {"stage1": 64, "stage2": 32})
    assert (one.start, one.losses, one.val_miou) == (0, {"total": ([640, 1280], [3.0, 2.0])}, ([1280], [12.5]))
    assert (two.start, two.losses, two.val_miou) == (
        1280,
        {"total": ([1440], [1.5]), "mask": ([1440], [0.5])},
        ([], []),
    )
    path = write_plot(tmp_path, {"stage1": 64, "stage2": 32})
    assert path == tmp_path / "training.png" and _png(path)[0].shape == (750, 850, 3)


def test_training_records_become_curves_with_classification_when_validated():
    from ovseg.viz.plot import stage_curves_from_records, training_figure

    records = [{"step": 1, "loss_total": 2.0, "loss_contrast": 1.5}, {"epoch": 0, "skipped": {}},
               {"step": 2, "val_miou": 30.0, "val_top1": 12.5, "val_top5": 40.0},
               {"step": 2, "loss_total": 1.0, "loss_contrast": 0.8}]
    stage = stage_curves_from_records("stage 1", [r for r in records if "step" in r], batch=8, start=100)
    assert stage.losses["total"] == ([108, 116], [2.0, 1.0]) and "grad_norm" not in stage.losses
    assert stage.val_miou == ([116], [30.0]) and stage.val_top1 == ([116], [12.5])
    figure = training_figure([stage])
    figure.canvas.draw()
    val = figure.axes[1]
    assert val.get_ylabel() == "mIoU / top-1 (%)" and "top-1" in val.get_title()
    assert [line.get_label() for line in val.get_lines() if line.get_linestyle() == ":"] == ["stage 1 top-1"]
