"""The demo (``ovseg demo`` / ``python -m main_demo``) on real photos saved in every format users have."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovseg
from ovseg import demo
from ovseg.class_presets import PRESETS, resolve_class_names
from ovseg.cli import demo as cli_demo
from ovseg.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["evaluate.seg.short_side=224", "evaluate.seg.crop_size=224", "evaluate.seg.stride=112"]  # 4× fewer pixels
GOOD = ["astronaut", "coffee", "chelsea", "camera_bmp", "camera_grey", "tiff", "rgba", "palette", "cmyk",
        "sixteen", "rotated", "tiny", "sub/deeper/nested"]


def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


def write_inputs(folder: Path, photos: dict[str, np.ndarray]) -> None:
    """One file per format and mode a user may have, plus a corrupt file and a non-image."""
    small = {k: np.asarray(Image.fromarray(v).reduce(4)) for k, v in photos.items()}  # 128 px: fast
    (folder / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(small["astronaut"]).save(folder / "astronaut.jpg")
    Image.fromarray(small["coffee"]).save(folder / "coffee.png")
    Image.fromarray(small["chelsea"]).save(folder / "chelsea.webp")
    Image.fromarray(small["camera"]).convert("RGB").save(folder / "camera_bmp.bmp")
    Image.fromarray(small["camera"]).save(folder / "camera_grey.jpg")  # mode L
    Image.fromarray(small["coffee"]).save(folder / "tiff.tif")
    rgba = Image.fromarray(small["chelsea"]).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray(small["astronaut"]).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(small["coffee"]).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(small["camera"].astype(np.uint16) * 257).save(folder / "sixteen.png")  # I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise (portrait)
    Image.fromarray(small["chelsea"][:60, :90]).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(small["astronaut"][:10, :12]).save(folder / "tiny.png")
    Image.fromarray(small["astronaut"]).save(folder / "sub" / "deeper" / "nested.jpg")
    (folder / "corrupt.jpg").write_bytes(_jpeg_bytes(small["astronaut"])[:300])
    (folder / "notes.txt").write_text("not an image\n")


def folder_state(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli_demo.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photos) -> Path:
    folder = tmp_path_factory.mktemp("in")
    write_inputs(folder, photos)
    return folder


@pytest.fixture(scope="module")
def all_modes(tmp_path_factory, inputs, tiny_checkpoint):
    """One run with every mode over the mixed folder (recursive): (exit status, out folder, input state
    before, stdout, stderr)."""
    before = folder_state(inputs)
    out = tmp_path_factory.mktemp("out") / "demo"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli_demo.main(["--cfg", "configs/test_voc12.yml", "--resume", str(tiny_checkpoint), "--vis", *demo.MODES,
                            "--vocab", "voc", "--image_folder", str(inputs), "--output_folder", str(out),
                            "--recursive", "--opts", *FAST])
    return rc, out, before, stdout.getvalue(), stderr.getvalue()


def test_every_mode_writes_every_image_named_after_it(all_modes):
    rc, out, *_ = all_modes
    assert rc == 1  # the corrupt file and the text file failed; the rest went on
    for name in GOOD:
        for mode in ("input", "input_pred", "input_pred_label", "first_group", "final_group"):
            assert (out / mode / f"{name}.jpg").is_file(), (mode, name)
        assert (out / "all_groups" / f"{name}_layer0.jpg").is_file()
        assert (out / "pred" / f"{name}.png").is_file() and (out / "mask" / f"{name}.png").is_file()
    assert not list(out.rglob("*corrupt*")) and not list(out.rglob("notes*"))
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_failures_named_in_one_line_each_and_counted(all_modes):
    rc, _, _, stdout, stderr = all_modes
    skipped = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and any("corrupt.jpg" in s for s in skipped) and any("notes.txt" in s for s in skipped)
    assert "13 images done, 2 failed" in stdout and "s per image" in stdout


def test_not_recursive_leaves_sub_folders_out(capsys, inputs, tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "top.png").write_bytes((inputs / "tiny.png").read_bytes())
    (folder / "sub" / "below.png").write_bytes((inputs / "tiny.png").read_bytes())
    rc, out, _ = run_cli(capsys, "--resume", tiny_checkpoint, "--vis", "mask", "--image_folder", folder,
                         "--output_folder", tmp_path / "o", "--opts", *FAST)
    assert rc == 0 and "1 image done, 0 failed" in out
    assert [p.name for p in (tmp_path / "o" / "mask").rglob("*.png")] == ["top.png"]


def test_input_folder_untouched(all_modes, inputs):
    _, _, before, *_ = all_modes
    assert folder_state(inputs) == before


def test_sizes_orientation_and_mask_meaning(all_modes, inputs):
    _, out, *_ = all_modes
    info = json.loads((out / "mask" / "classes.json").read_text())
    assert info["classes"] == ["background", *PRESETS["voc"]] and info["background"] is True
    assert info["settings"]["bg_thresh"] == 0.95
    rotated = Image.open(out / "input" / "rotated.jpg")
    assert rotated.size == (60, 90)  # shown upright: EXIF orientation applied
    assert Image.open(out / "mask" / "rotated.png").size == (60, 90)
    assert Image.open(out / "mask" / "tiny.png").size == (12, 10)
    mask = np.asarray(Image.open(out / "mask" / "astronaut.png"))
    assert mask.dtype == np.uint8 and mask.max() < len(info["classes"])
    pred = Image.open(out / "pred" / "astronaut.png")
    assert pred.mode == "P" and np.array_equal(np.asarray(pred), mask)
    palette = np.array(pred.getpalette()[: 3 * len(info["classes"])]).reshape(-1, 3)
    assert palette.tolist() == info["palette"]


def test_api_label_map_equals_cli_mask(all_modes, inputs, tiny_checkpoint):
    _, out, *_ = all_modes
    seg_cfg = load_config(ROOT / "configs" / "test_voc12.yml", FAST).evaluate.seg
    seg = ovseg.Segmenter.from_checkpoint(tiny_checkpoint, seg_cfg=seg_cfg)
    for name, file in (("astronaut", "astronaut.jpg"), ("cmyk", "cmyk.jpg"), ("rotated", "rotated.jpg")):
        pred = seg.predict(inputs / file, list(PRESETS["voc"]))
        assert np.array_equal(pred.labels.numpy(), np.asarray(Image.open(out / "mask" / f"{name}.png")))


def test_seed_command_line_from_repo_root(inputs, tiny_checkpoint, tmp_path):
    images = tmp_path / "IN"
    images.mkdir()
    for name in ("astronaut.jpg", "coffee.png"):
        (images / name).write_bytes((inputs / name).read_bytes())
    cmd = [sys.executable, "-u", "-m", "main_demo", "--cfg", "configs/test_voc12.yml", "--resume",
           str(tiny_checkpoint), "--vis", "input_pred_label", "--vocab", "voc", "--image_folder", f"{images}/",
           "--output_folder", f"{tmp_path / 'OUT'}/", "--opts", "evaluate.seg.top_k=3", "--local_rank", "0"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "OUT" / "input_pred_label").iterdir()) == ["astronaut.jpg",
                                                                                         "coffee.jpg"]
    assert "2 images done, 0 failed" in done.stdout


def test_ovseg_demo_defaults_vocab_words_and_synonyms(capsys, inputs, tiny_checkpoint, tmp_path):
    out = tmp_path / "o"
    rc = ovseg.cli.main(["demo", "--resume", str(tiny_checkpoint), "--image_folder", str(inputs / "sub" / "deeper"),
                         "--output_folder", str(out)])
    assert rc == 0 and (out / "input_pred_label" / "nested.jpg").is_file()  # default mode
    rc, _, _ = run_cli(capsys, "--resume", tiny_checkpoint, "--image_folder", inputs / "sub" / "deeper",
                       "--output_folder", out, "--vis", "mask", "pred", "--vocab", "potted plant", "traffic light",
                       "person|man|woman", "--templates", "subset", "--bg-thresh", "0.5")
    info = json.loads((out / "mask" / "classes.json").read_text())
    assert rc == 0 and info["classes"] == ["background", "potted plant", "traffic light", "person"]
    assert info["vocabulary"][2] == "person|man|woman" and info["settings"]["bg_thresh"] == 0.5


def test_no_background_and_preset_config(capsys, inputs, tiny_checkpoint, tmp_path):
    """--vocab ade picks test_ade20k.yml (no background): index 0 never occurs, classes keep their index."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tiny.png").write_bytes((inputs / "tiny.png").read_bytes())
    rc, _, _ = run_cli(capsys, "--resume", tiny_checkpoint, "--image_folder", folder, "--output_folder",
                       tmp_path / "o", "--vis", "mask", "input_pred_label", "--vocab", "ade")
    info = json.loads((tmp_path / "o" / "mask" / "classes.json").read_text())
    assert rc == 0 and len(info["classes"]) == 151 and info["background"] is False
    assert np.asarray(Image.open(tmp_path / "o" / "mask" / "tiny.png")).min() >= 1
    rc, _, _ = run_cli(capsys, "--resume", tiny_checkpoint, "--image_folder", folder, "--output_folder",
                       tmp_path / "o2", "--vis", "mask", "--vocab", "cat", "dog", "--bg-thresh", "none")
    assert rc == 0 and np.asarray(Image.open(tmp_path / "o2" / "mask" / "tiny.png")).min() >= 1


def test_preset_class_counts():
    counts = {name: len(resolve_class_names([name])) for name in ("voc", "context", "coco", "ade")}
    assert counts == {"voc": 20, "context": 59, "coco": 80, "ade": 150}
    assert resolve_class_names(["background", "cat", "dog"]) == ["cat", "dog"]


@pytest.mark.parametrize("case", ["empty_folder", "missing_folder", "empty_vocab", "bar_vocab", "missing_ckpt",
                                  "no_ckpt", "bad_thresh", "bad_mode", "output_inside_input", "cuda"])
def test_user_mistakes_are_one_line_exit_2(capsys, tiny_checkpoint, inputs, tmp_path, case):
    (tmp_path / "empty").mkdir()
    args = {"--resume": tiny_checkpoint, "--image_folder": inputs, "--output_folder": tmp_path / "o"}
    extra: list = []
    if case == "empty_folder":
        args["--image_folder"] = tmp_path / "empty"
    elif case == "missing_folder":
        args["--image_folder"] = tmp_path / "nope"
    elif case in ("empty_vocab", "bar_vocab"):
        extra = ["--vocab", "background" if case == "empty_vocab" else "cat", "|"]
    elif case == "missing_ckpt":
        args["--resume"] = tmp_path / "missing.pth"
    elif case == "no_ckpt":
        del args["--resume"]
    elif case == "bad_thresh":
        extra = ["--bg-thresh", "high"]
    elif case == "bad_mode":
        extra = ["--vis", "input_seg_label"]
    elif case == "output_inside_input":
        args["--output_folder"] = inputs / "out"
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        extra = ["--device", "cuda"]
    rc, out, err = run_cli(capsys, *[str(x) for kv in args.items() for x in kv], *extra)
    assert rc == 2 and out == ""
    assert err.startswith("main_demo: error: ") and err.count("\n") == 1, err
    assert not (inputs / "out").exists()


def test_outputs_are_atomic(tiny_checkpoint, inputs, tmp_path, monkeypatch):
    """A run killed while writing leaves neither a half-written picture nor a temporary file."""
    seg = ovseg.Segmenter.from_checkpoint(tiny_checkpoint)
    out = tmp_path / "o"

    def dying_save(self, fp, format=None, **kwargs):
        Path(fp).write_bytes(b"half a picture")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        demo.process_image(seg, inputs / "astronaut.jpg", Path("astronaut"), out,
                           demo.DemoOptions(modes=("mask",), class_names=["cat"]))
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_large_photo_in_bounded_memory(tiny_checkpoint, photos, tmp_path):
    """8000×6000: the model sees it at 448 px, and pictures are drawn in bands; peak memory stays < 3 GB."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photos["coffee"]).resize((8000, 6000), Image.BILINEAR).save(folder / "big.jpg", quality=80)
    # VmHWM is this process's own peak; ru_maxrss would also count the forking pytest process's RSS
    code = ("import re, sys; from ovseg.cli.demo import main; rc = main(sys.argv[1:]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print('peak', hwm); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "--resume", str(tiny_checkpoint), "--vis", "mask", "input_pred_label",
           "--image_folder", str(folder), "--output_folder", str(tmp_path / "o"), "--vocab", "cat", "dog",
           "--opts", *FAST]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "o" / "mask" / "big.png").size == (8000, 6000)
    peak_kib = int(done.stdout.split("peak")[-1])
    assert peak_kib < 3 * 1024 * 1024, peak_kib


def test_modes_aliases_and_name_collisions(tmp_path):
    assert demo.normalize_modes(None) == ("input_pred_label",)
    assert demo.normalize_modes(["input_pred_seg_label", "mask", "mask", "last_group"]) == (
        "input_pred_label", "mask", "final_group")
    for name in ("a.jpg", "a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    stems = demo.output_stems(sorted(tmp_path.iterdir()), tmp_path)
    assert sorted(str(s) for s in stems.values()) == ["a.jpg", "a.png", "b"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_vocabulary_uses_its_benchmark_config(preset):
    """--vocab <preset> without --cfg: the settings (background threshold) of the benchmark of that class list."""
    from ovseg.evaluation import EVAL_SETS
    from ovseg.factory import preset_path

    (eval_set,) = (b for b in EVAL_SETS.values() if b.classes == PRESETS[preset])
    expected = load_config(preset_path(eval_set.config)).evaluate.seg
    seg, _ = cli_demo._seg_config(None, [preset], [])
    assert seg.dataset == expected.dataset == eval_set.name
    assert seg.bg_thresh == expected.bg_thresh
    assert cli_demo._seg_config(None, ["cat", "dog"], [])[0].bg_thresh == 0.95  # a custom vocabulary: VOC's


def test_output_names_never_collide(tmp_path):
    """Whole relative paths are kept where a stem would be shared, and a kept stem is nobody's whole path;
    the choice depends on the set of names, not on their order."""
    names = ["a.jpg", "a.png", "a.jpg.png", "a", "b.tar.gz", "b.tar", "c.jpg", "c_layer0.jpg", "sub/a.jpg"]
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    files = [tmp_path / n for n in names]
    stems = demo.output_stems(files, tmp_path)
    assert {str(stems[tmp_path / n]) for n in ("a.jpg", "a.png", "a.jpg.png", "a", "c.jpg", "sub/a.jpg")} == {
        "a.jpg", "a.png", "a.jpg.png", "a", "c", "sub/a"}
    assert str(stems[tmp_path / "b.tar.gz"]) == "b.tar.gz" and str(stems[tmp_path / "b.tar"]) == "b"
    assert demo.output_stems(files[::-1], tmp_path) == stems
    for mode in demo.MODES:
        ext = ".png" if mode in demo.PNG_MODES else ".jpg"
        suffixes = ["_layer0", "_layer1"] if mode == "all_groups" else [""]
        outputs = [f"{s}{x}{ext}" for s in stems.values() for x in suffixes]
        assert len(set(outputs)) == len(outputs), mode
    renamed = demo.renamed_outputs(stems, tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in renamed) == ["a.jpg", "a.jpg.png", "a.png", "b.tar.gz"]


def test_same_name_other_extension_gives_distinct_outputs(capsys, tiny_checkpoint, tmp_path):
    """a.jpg, a.png and a.jpg.png used to share outputs (one overwriting another while "3 done" was
    reported); now each has its own per mode, and the summary says which were renamed."""
    folder = tmp_path / "in"
    folder.mkdir()
    colours = {"a.jpg": (200, 30, 30), "a.png": (30, 200, 30), "a.jpg.png": (30, 30, 200)}
    for name, colour in colours.items():
        Image.new("RGB", (40, 32), colour).save(folder / name, format="PNG" if name.endswith(".png") else "JPEG")
    out = tmp_path / "o"
    rc, stdout, _ = run_cli(capsys, "--resume", tiny_checkpoint, "--vis", "input", "mask", "all_groups",
                            "--vocab", "cat", "dog", "--image_folder", folder, "--output_folder", out, "--opts", *FAST)
    assert rc == 0 and "3 images done, 0 failed" in stdout
    assert sorted(p.name for p in (out / "input").iterdir()) == ["a.jpg.jpg", "a.jpg.png.jpg", "a.png.jpg"]
    assert sorted(p.name for p in (out / "mask").glob("a*")) == ["a.jpg.png", "a.jpg.png.png", "a.png.png"]
    assert len(list((out / "all_groups").iterdir())) == 3 * len(list((out / "all_groups").glob("a.png_layer*")))
    for name, colour in colours.items():  # nothing overwritten: each output shows its own input
        pixel = np.asarray(Image.open(out / "input" / f"{name}.jpg"))[16, 20]
        assert np.abs(pixel.astype(int) - colour).max() < 8, (name, pixel)
    assert ("3 outputs renamed to avoid collisions" in stdout and "a.jpg -> a.jpg.<ext>" in stdout
            and "a.jpg.png -> a.jpg.png.<ext>" in stdout and "a.png -> a.png.<ext>" in stdout), stdout
    summary = demo.run_demo(ovseg.Segmenter.from_checkpoint(tiny_checkpoint), folder, tmp_path / "api",
                            demo.DemoOptions(modes=("input",), class_names=["cat"]))
    assert {p.name: str(s) for p, s in summary.renamed.items()} == {n: n for n in colours}
