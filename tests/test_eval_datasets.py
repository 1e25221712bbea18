"""Benchmark readers on small folders written here in each dataset's exact layout, plus the bad-input cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.errors import OvsegError
from ovseg.evaluation import EVAL_SETS, SegDataset, find_samples, get_eval_set

H, W = 12, 16


def jpg(path: Path, h: int = H, w: int = W, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def png(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:  # VOC's SegmentationClass files are palette PNGs
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)


def label_map(values: list[int], h: int = H, w: int = W) -> np.ndarray:
    """Horizontal bands of the given values."""
    rows = np.array_split(np.arange(h), len(values))
    out = np.zeros((h, w), dtype=np.uint8)
    for band, v in zip(rows, values, strict=True):
        out[band] = v
    return out


def write_voc(root: Path, stems=("2007_000033", "2007_000042"), values=((0, 1, 15), (0, 255, 20)),
              ann="SegmentationClass", split="ImageSets/Segmentation/val.txt", palette=True) -> Path:
    for i, (stem, vals) in enumerate(zip(stems, values, strict=True)):
        jpg(root / "JPEGImages" / f"{stem}.jpg", seed=i)
        png(root / ann / f"{stem}.png", label_map(list(vals)), palette=palette)
    (root / split).parent.mkdir(parents=True, exist_ok=True)
    (root / split).write_text("".join(f"{s}\n" for s in stems))
    return root


def write_ade(root: Path) -> Path:
    for i, vals in enumerate([(0, 1, 3), (150, 2, 0)], start=1):
        jpg(root / "images" / "validation" / f"ADE_val_{i:08d}.jpg", seed=i)
        png(root / "annotations" / "validation" / f"ADE_val_{i:08d}.png", label_map(list(vals)))
    return root


def write_coco(root: Path, ann: str, suffix: str, values=((0, 1, 80), (0, 255, 3))) -> Path:
    for i, vals in enumerate(values):
        stem = f"{139 + i:012d}"
        jpg(root / "images" / "val2017" / f"{stem}.jpg", seed=i)
        png(root / ann / f"{stem}{suffix}", label_map(list(vals)))
    return root


def write_cityscapes(root: Path) -> Path:
    for city, stem in [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000000_000019")]:
        img = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(img)
        png(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png", label_map([0, 18, 255]))
        png(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", label_map([7, 33, 0]))
    return root


def load_all(name: str, root: Path):
    eval_set = get_eval_set(name)
    _, paths = find_samples(eval_set, root)
    data = SegDataset(eval_set, paths)
    return paths, [data.load(i) for i in range(len(data))]


# ------------------------------------------------------------------------------------ class lists and counts
@pytest.mark.parametrize("name, count, first, last", [
    ("voc", 21, "background", "monitor"), ("context", 60, "background", "wood"),
    ("coco_object", 81, "background", "toothbrush"), ("ade20k", 150, "wall", "flag"),
    ("voc20", 20, "aeroplane", "tvmonitor"), ("context59", 59, "aeroplane", "wood"),
    ("coco_stuff", 171, "person", "wood"), ("cityscapes", 19, "road", "bicycle"),
])
def test_class_lists(name, count, first, last):
    b = EVAL_SETS[name]
    names = b.class_names
    assert len(names) == count == b.num_classes
    assert (names[0], names[-1]) == (first, last)
    assert len(set(names)) == count


def test_renames_and_raw_names():
    voc, ctx, ade = (EVAL_SETS[n].class_names for n in ("voc", "context", "ade20k"))
    assert (voc[11], voc[16], voc[20]) == ("table", "plant", "monitor")
    assert (ctx[1], ctx[40], ctx[55]) == ("airplane", "plant", "monitor")
    assert ade[7] == "bed " and ade[8] == "windowpane"
    assert EVAL_SETS["voc20"].class_names[10] == "diningtable"
    assert EVAL_SETS["context59"].class_names[39] == "pottedplant"
    assert EVAL_SETS["coco_stuff"].class_names[80] == "banner"
    assert get_eval_set("pc59").name == "context59" and get_eval_set("coco").name == "coco_object"
    with pytest.raises(OvsegError, match="unknown dataset"):
        get_eval_set("imagenet")


# ------------------------------------------------------------------------------------------------ layouts
def test_voc_layout_and_labels(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    paths, samples = load_all("voc", root)
    assert [p.name for p in paths] == ["2007_000033", "2007_000042"]
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 1, 15]  # palette indices, not colours
    assert sorted(np.unique(samples[1].label.numpy())) == [0, 20, 255]
    assert samples[0].size == (H, W) and samples[0].image.shape[-2:] == (448, 597)
    assert samples[0].invalid == 0


def test_voc20_and_context59_reduce_zero_label(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    _, samples = load_all("voc20", root)
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 14, 255]  # 0 -> 255, k -> k-1
    assert sorted(np.unique(samples[1].label.numpy())) == [19, 255]
    ctx = write_voc(tmp_path / "VOC2010", values=((0, 59, 255), (3, 4, 5)), ann="SegmentationClassContext",
                    split="ImageSets/SegmentationContext/val.txt", palette=False)
    _, samples = load_all("context59", ctx)
    assert sorted(np.unique(samples[0].label.numpy())) == [58, 255]
    _, samples = load_all("context", ctx)
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 59, 255]


def test_ade20k_layout(tmp_path):
    write_ade(tmp_path / "ADEChallengeData2016")
    paths, samples = load_all("ade20k", tmp_path)  # the parent folder is accepted too
    assert [p.name for p in paths] == ["ADE_val_00000001", "ADE_val_00000002"]
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 2, 255]
    assert sorted(np.unique(samples[1].label.numpy())) == [1, 149, 255]


def test_coco_object_prefers_cocoobject_folder(tmp_path):
    root = write_coco(tmp_path / "coco", "annotations/val2017", "_instanceTrainIds.png",
                      values=((171, 1, 1), (0, 0, 0)))
    write_coco(root, "annotations/val2017_cocoobject", "_instanceTrainIds.png")
    paths, samples = load_all("coco_object", root)
    assert paths[0].label.parent.name == "val2017_cocoobject"
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 1, 80]


def test_coco_stuff_and_cityscapes_layouts(tmp_path):
    root = write_coco(tmp_path / "coco_stuff164k", "annotations/val2017", "_labelTrainIds.png",
                      values=((0, 170, 255), (5, 6, 7)))
    write_coco(root, "annotations/val2017", "_instanceTrainIds.png")  # other files in the folder are ignored
    _, samples = load_all("coco_stuff", root)
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 170, 255]
    paths, samples = load_all("cityscapes", write_cityscapes(tmp_path / "cityscapes"))
    assert [p.name for p in paths] == ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"]
    assert sorted(np.unique(samples[0].label.numpy())) == [0, 18, 255]


# ---------------------------------------------------------------------------------------------- bad input
def test_wrong_data_root_names_missing_subfolder(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    with pytest.raises(OvsegError, match="has no 'SegmentationClassContext/'"):
        find_samples(get_eval_set("context"), root)
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(OvsegError, match="has no 'ImageSets/Segmentation/val.txt'"):
        find_samples(get_eval_set("voc"), root)
    with pytest.raises(OvsegError, match="does not exist"):
        find_samples(get_eval_set("voc"), tmp_path / "nowhere")
    with pytest.raises(OvsegError, match="has no 'images/validation/'"):
        find_samples(get_eval_set("ade20k"), root)


def test_parent_folder_is_searched(tmp_path):
    write_voc(tmp_path / "VOCdevkit" / "VOC2012")
    root, paths = find_samples(get_eval_set("voc"), tmp_path)
    assert root == tmp_path / "VOCdevkit" / "VOC2012" and len(paths) == 2


def test_list_naming_absent_files(tmp_path):
    root = write_voc(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n2007_999999\n")
    with pytest.raises(OvsegError, match=r"1 of 2 images .* missing \(e.g. JPEGImages/2007_999999.jpg\)"):
        find_samples(get_eval_set("voc"), root)
    (root / "SegmentationClass" / "2007_000042.png").unlink()
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n2007_000042\n")
    with pytest.raises(OvsegError, match=r"labels .* missing \(e.g. SegmentationClass/2007_000042.png\)"):
        find_samples(get_eval_set("voc"), root)


def test_image_without_label_in_scanned_layout(tmp_path):
    root = write_ade(tmp_path)
    jpg(root / "images" / "validation" / "ADE_val_00000003.jpg")
    with pytest.raises(OvsegError, match="ADE_val_00000003.png"):
        find_samples(get_eval_set("ade20k"), root)


def test_label_size_mismatch(tmp_path):
    root = write_voc(tmp_path)
    png(root / "SegmentationClass" / "2007_000042.png", np.zeros((H + 1, W), dtype=np.uint8))
    with pytest.raises(OvsegError, match=r"2007_000042.png: label is 16×13 but its image 2007_000042.jpg is 16×12"):
        load_all("voc", root)


def test_colour_label_is_refused(tmp_path):
    root = write_voc(tmp_path)
    Image.new("RGB", (W, H)).save(root / "SegmentationClass" / "2007_000033.png")
    with pytest.raises(OvsegError, match="mode RGB"):
        load_all("voc", root)


def test_out_of_range_labels_are_counted(tmp_path):
    root = write_voc(tmp_path, values=((0, 1, 30), (0, 21, 255)))
    _, samples = load_all("voc", root)
    assert samples[0].invalid == 4 * W and samples[0].invalid_values == (30,)
    assert samples[1].invalid == 4 * W and samples[1].invalid_values == (21,)
    _, samples = load_all("ade20k", write_ade(tmp_path / "ade"))
    assert samples[1].invalid == 0  # 150 -> 149 is in range
