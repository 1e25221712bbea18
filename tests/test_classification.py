"""Zero-shot classification: the shipped ImageNet names, folder and CSV inputs, top-1 / top-5 against an
independent computation and a case whose answer is known, sharding, ``ovseg eval --task cls``, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ovseg
from ovseg.cli import main as cli_main
from ovseg.config import schema
from ovseg.errors import ConfigError, ImageError
from ovseg.evaluation import classification, evaluate_classification, load_class_list, read_labelled_images
from ovseg.evaluation.labelled_images import center_crop
from ovseg.model.text import build_tokenizer
from ovseg.prompts import SUBSET

NAMES = ["cat", "dog", "car"]
SIZES = [(300, 260), (240, 320), (256, 256), (333, 257)]  # (width, height): landscape, portrait, square


def cls_cfg(data_root, classes, **overrides):
    cfg = schema().evaluate.cls
    cfg.data_root, cfg.classes = str(data_root), str(classes)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def write_names(path: Path, names=NAMES) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


def write_folder(root: Path, folders=NAMES, per_class=3, colour=None) -> list[tuple[Path, int]]:
    """Class folders of colour-gradient images (PNG and JPEG, several shapes; a random model ranks classes
    differently for them), or of one pure ``colour`` channel per class; (path, class index) in folder order."""
    rng = np.random.default_rng(0)
    items = []
    for label, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            w, h = SIZES[(label + i) % len(SIZES)]
            if colour is None:
                y, x = np.mgrid[0:h, 0:w]
                ramps = rng.normal(0, 60, 3) * (x / w)[..., None] + rng.normal(0, 60, 3) * (y / h)[..., None]
                pixels = np.clip(rng.integers(0, 256, 3) + ramps, 0, 255).astype(np.uint8)
            else:
                pixels = np.zeros((h, w, 3), np.uint8)
                pixels[..., colour[label]] = 255
            path = root / folder / f"img{i}.{'png' if i % 2 == 0 else 'jpg'}"
            Image.fromarray(pixels).save(path, quality=95)
            items.append((path, label))
    return items


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ovseg.create_model("tiny").eval()


# ---- the shipped class list ----------------------------------------------------------------------------------


def test_imagenet_class_list_is_the_originals():
    classes = load_class_list("imagenet")
    names, wnids = classes.names, classes.wnids
    assert len(names) == len(wnids) == 1000 and len(set(wnids)) == 1000
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)
    assert (names[0], wnids[0]) == ("tench", "n01440764")
    assert names[1] == "goldfish" and names[2] == "great white shark"
    assert (names[207], wnids[207]) == ("Golden Retriever", "n02099601")
    assert (names[999], wnids[999]) == ("toilet paper", "n15075141")
    # the original's imagenet_template.py names two pairs of classes alike; kept so that its top-1 reproduces
    repeated = {n: [i for i, m in enumerate(names) if m == n] for n in names if names.count(n) > 1}
    assert repeated == {"missile": [657, 744], "sunglasses": [836, 837]}


def test_class_files_text_and_json(tmp_path):
    assert load_class_list(str(write_names(tmp_path / "names.txt"))).names == NAMES
    (tmp_path / "names.json").write_text(json.dumps(NAMES))
    assert load_class_list(str(tmp_path / "names.json")).names == NAMES
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    with pytest.raises(ConfigError, match="line 2: empty class name"):
        load_class_list(str(tmp_path / "gap.txt"))
    with pytest.raises(ConfigError, match="no such file"):
        load_class_list(str(tmp_path / "absent.txt"))


# ---- reading folders and CSVs ---------------------------------------------------------------------------------


def test_wordnet_id_folders_map_to_imagenet_indices(tmp_path):
    write_folder(tmp_path / "val", folders=["n02099601", "n01440764", "goldfish"], per_class=1)
    data = read_labelled_images(cls_cfg(tmp_path / "val", "imagenet"))
    assert sorted(zip([p.parent.name for p in data.paths], data.labels, strict=True)) == [
        ("goldfish", 1), ("n01440764", 0), ("n02099601", 207)]
    (tmp_path / "val" / "missile").mkdir()  # classes 657 and 744 share the name
    with pytest.raises(ConfigError, match=r"'missile' names classes \[657, 744\]"):
        read_labelled_images(cls_cfg(tmp_path / "val", "imagenet"))


def test_csv_labels_by_index_name_or_wnid(tmp_path):
    items = write_folder(tmp_path / "imgs", folders=["a", "b", "c"], per_class=1)
    rows = [f"imgs/a/{items[0][0].name},0", f"imgs/b/{items[1][0].name},goldfish",
            f"imgs/c/{items[2][0].name},n02099601"]
    (tmp_path / "val.csv").write_text("image_id,label\n" + "\n".join(rows) + "\n")
    data = read_labelled_images(cls_cfg(tmp_path / "val.csv", "imagenet"))
    assert data.labels == [0, 1, 207] and data.paths[0] == tmp_path / "imgs" / "a" / items[0][0].name


def test_max_images_spreads_over_classes(tmp_path):
    write_folder(tmp_path / "val", per_class=3)
    data = read_labelled_images(cls_cfg(tmp_path / "val", write_names(tmp_path / "n.txt"), max_images=3))
    assert sorted(data.labels) == [0, 1, 2]  # one of each (folders in name order: car, cat, dog)


@pytest.mark.parametrize("size", [(300, 260), (240, 320), (224, 224)])
def test_center_crop_is_resize_then_centre(size):
    rgb = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    w, h = size
    new = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)  # torchvision's Resize(256) sizes
    big = Image.fromarray(rgb).resize(new, Image.BILINEAR)
    left, top = round((new[0] - 224) / 2), round((new[1] - 224) / 2)
    expected = np.asarray(big.crop((left, top, left + 224, top + 224)))
    got = center_crop(rgb, 256, 224)
    assert got.dtype == torch.uint8 and got.shape == (3, 224, 224)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), expected)


# ---- scoring --------------------------------------------------------------------------------------------------


def independent_scores(model, items, names) -> torch.Tensor:
    """(N, C) cosines: pooled image embedding of the resized, cropped, normalised image against the class's
    averaged template embeddings, one image and one class at a time."""
    tok = build_tokenizer(model.cfg.text_encoder.name)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        text = []
        for name in names:
            t = tok([tmpl.format(name) for tmpl in SUBSET], padding=True, return_tensors="pt")
            text.append(F.normalize(model.encode_text(t["input_ids"], t["attention_mask"]).text_x.mean(0), dim=-1))
        scores = []
        for path, _ in items:
            img = Image.open(path).convert("RGB")
            w, h = img.size
            new = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
            img = img.resize(new, Image.BILINEAR)
            left, top = round((new[0] - 224) / 2), round((new[1] - 224) / 2)
            x = torch.from_numpy(np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255)
            x = (x.permute(2, 0, 1) - mean) / std
            image = F.normalize(model.encode_image(x[None]).image_x[0], dim=-1)
            scores.append(image @ torch.stack(text).T)
    return torch.stack(scores)


def test_top1_top5_equal_an_independent_computation(tmp_path, model):
    names = ["cat", "dog", "car", "tree", "boat", "bird", "house"]
    write_folder(tmp_path / "val", folders=names[:3], per_class=3)
    cfg = cls_cfg(tmp_path / "val", write_names(tmp_path / "n.txt", names))
    items = [(path, names.index(path.parent.name)) for path in read_labelled_images(cfg).paths]  # scoring order
    scores = independent_scores(model, items, names)
    labels = torch.tensor([label for _, label in items])
    ranked = scores.argsort(dim=1, descending=True)
    assert len(set(ranked[:, 0].tolist())) > 1  # the images are told apart: the comparison below can fail
    top1 = 100.0 * (ranked[:, 0] == labels).float().mean().item()
    top5 = 100.0 * (ranked[:, :5] == labels[:, None]).any(1).float().mean().item()
    model.train()
    result = evaluate_classification(model, cfg, progress=False, num_workers=0)
    assert model.training  # left in the mode it came in
    model.eval()
    assert torch.equal(result.predictions, ranked[:, :5])  # every image's five best classes, in order
    assert (result.top1, result.top5) == (pytest.approx(top1), pytest.approx(top5))
    assert result.num_images == 9 and result.num_classes == 7
    assert [c["class"] for c in result.per_class] == names[:3] and all(c["images"] == 3 for c in result.per_class)
    per_class_top1 = [100.0 * (ranked[labels == c, 0] == c).float().mean().item() for c in range(3)]
    assert [c["top1"] for c in result.per_class] == pytest.approx(per_class_top1)


def test_known_answer_and_csv_equals_folder(tmp_path, model, monkeypatch):
    """An image encoder that maps a pure red / green / blue image onto class 0 / 1 / 2's text embedding: every
    image is classified by its colour, so one image filed under the wrong class costs exactly one hit."""
    cfg = cls_cfg(tmp_path / "val", write_names(tmp_path / "n.txt"))
    text = classification.embed_class_names(model, build_tokenizer(model.cfg.text_encoder.name), NAMES, "subset")
    real = model.encode_image

    def by_colour(images, **kwargs):
        out = real(images, **kwargs)
        out.image_x = images.mean(dim=(2, 3)).clamp(min=0) @ text  # only the image's own channel is positive
        return out

    monkeypatch.setattr(model, "encode_image", by_colour)
    items = write_folder(tmp_path / "val", per_class=3, colour=[0, 1, 2])
    wrong = tmp_path / "val" / "cat" / "blue.png"  # a blue image filed as a cat: predicted car
    Image.fromarray(np.full((240, 250, 3), (0, 0, 255), np.uint8)).save(wrong)
    result = evaluate_classification(model, cfg, progress=False, num_workers=0)
    assert result.num_images == 10 and result.top1 == pytest.approx(90.0) and result.top5 == 100.0
    # in folder order: car/ (3 blue), cat/ (blue.png, then 3 red), dog/ (3 green)
    assert result.predictions[:, 0].tolist() == [2, 2, 2, 2, 0, 0, 0, 1, 1, 1]
    assert [c["top1"] for c in result.per_class] == pytest.approx([75.0, 100.0, 100.0])

    rows = [f"val/{p.parent.name}/{p.name},{label if i % 2 else NAMES[label]}" for i, (p, label) in enumerate(items)]
    (tmp_path / "val.csv").write_text("image,label\n" + "\n".join(rows + ["val/cat/blue.png,0"]) + "\n")
    from_csv = evaluate_classification(model, cls_cfg(tmp_path / "val.csv", cfg.classes), progress=False,
                                       num_workers=0)
    assert (from_csv.top1, from_csv.top5, from_csv.per_class) == (result.top1, result.top5, result.per_class)


def test_shards_add_up_to_the_whole(tmp_path, model, monkeypatch):
    cfg = cls_cfg(tmp_path / "val", write_names(tmp_path / "n.txt"))
    write_folder(tmp_path / "val", per_class=3)
    whole = evaluate_classification(model, cfg, progress=False, num_workers=0)
    monkeypatch.setattr(classification, "is_distributed", lambda: True)
    monkeypatch.setattr(classification, "world_size", lambda: 2)
    monkeypatch.setattr(classification.dist, "all_reduce", lambda counts: None)  # each rank keeps its own part
    parts = []
    for r in (0, 1):
        monkeypatch.setattr(classification, "rank", lambda r=r: r)
        parts.append(evaluate_classification(model, cfg, progress=False, num_workers=0))
    assert [p.num_images for p in parts] == [5, 4]
    hits = sum(p.top1 * p.num_images for p in parts) / 100
    assert hits == pytest.approx(whole.top1 * whole.num_images / 100)
    unsharded = evaluate_classification(model, cfg, progress=False, num_workers=0, shard=False)
    assert unsharded.num_images == 9


# ---- the command line -----------------------------------------------------------------------------------------


def run_cli(args, capsys):
    code = cli_main(["eval", "--task", "cls", "--device", "cpu", "--no-progress", "--workers", "0", *args])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_cli_writes_results_json_equal_to_the_api(tmp_path, tiny_checkpoint, capsys):
    write_folder(tmp_path / "val", per_class=2)
    names = write_names(tmp_path / "n.txt")
    code, out, err = run_cli(["--data-root", str(tmp_path / "val"), "--classes", str(names), "--resume",
                              str(tiny_checkpoint), "--output", str(tmp_path / "out")], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    model, _ = ovseg.load_model(tiny_checkpoint)
    api = evaluate_classification(model, cls_cfg(tmp_path / "val", names), progress=False, num_workers=0)
    assert saved["top1"] == pytest.approx(api.top1) and saved["top5"] == pytest.approx(api.top5)
    assert saved["num_images"] == 6 and saved["num_classes"] == 3 and len(saved["per_class"]) == 3
    assert saved["settings"]["cls"]["template"] == "subset" and saved["settings"]["checkpoint"] == str(tiny_checkpoint)
    assert len(out.splitlines()) == 1 and f"top-1 {api.top1:.2f}" in out


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    names = write_names(tmp_path / "n.txt")
    write_folder(tmp_path / "val", per_class=1)
    write_folder(tmp_path / "extra", folders=["cat", "zebra"], per_class=1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "range.csv").write_text("image,label\nval/cat/img0.png,3\n")
    (tmp_path / "val" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    return {
        "class missing from the list": (["--data-root", str(tmp_path / "extra"), "--classes", str(names)],
                                        "'zebra'"),
        "empty folder": (["--data-root", str(tmp_path / "empty"), "--classes", str(names)], "no class sub-folders"),
        "label out of range": (["--data-root", str(tmp_path / "range.csv"), "--classes", str(names)],
                               "line 2: label 3 out of range 0..2"),
        "unreadable image": (["--data-root", str(tmp_path / "val"), "--classes", str(names)], "broken.jpg"),
        "missing class file": (["--data-root", str(tmp_path / "val"), "--classes", str(tmp_path / "x.txt")],
                               "x.txt: no such file"),
        "segmentation flag": (["--data-root", str(tmp_path / "val"), "--flip"], "--flip"),
    }


def test_cli_bad_inputs_are_one_line_and_exit_2(tmp_path, tiny_checkpoint, capsys):
    for what, (args, expected) in bad_inputs(tmp_path).items():
        code, out, err = run_cli([*args, "--resume", str(tiny_checkpoint)], capsys)
        assert code == 2, what
        assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, (what, err)


def test_unreadable_image_is_an_image_error_naming_it(tmp_path, model):
    write_folder(tmp_path / "val", per_class=1)
    (tmp_path / "val" / "car" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match="broken.png"):
        evaluate_classification(model, cls_cfg(tmp_path / "val", write_names(tmp_path / "n.txt")), progress=False,
                                num_workers=0)
