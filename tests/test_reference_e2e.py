"""The original's evaluation preprocessing, bit for bit, and ``verify-reference`` on end-to-end folders
(photo files -> resize -> normalisation -> sliding windows -> label maps, ``shared/reference-e2e``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ovseg.errors import OvsegError
from ovseg.images import load_image
from ovseg.inference.preprocess import keep_ratio_size, prepare_image, resize_uint8
from ovseg.verify import format_table, strided_steps, verify_reference

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (ROOT / "tests" / "data" / "reference-e2e", ROOT.parent / "shared" / "reference-e2e")
E2E = next((path for path in CANDIDATES if (path / "manifest.json").is_file()), None)
needs_e2e = pytest.mark.skipif(E2E is None, reason="no reference-e2e folder (tests/data/ or ../shared/)")


def photo_entries() -> list[dict]:
    return [e for e in json.loads((E2E / "manifest.json").read_text())["inputs"] if "file" in e]


def verify_cli(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ovseg", "verify-reference", str(folder)], capture_output=True, text=True, timeout=600
    )


@needs_e2e
def test_every_end_to_end_entry_matches_from_the_cli():
    result = verify_cli(E2E)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "all outputs match" in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:-2]}
    manifest = json.loads((E2E / "manifest.json").read_text())
    for entry in manifest["outputs"] + photo_entries():
        assert entry["name"] in lines and " ok" in lines[entry["name"]], entry["name"]
    label_maps = [line for name, line in lines.items() if name.endswith(".label_map")]
    assert len(label_maps) == sum(e["name"].endswith(".label_map") for e in manifest["outputs"]) > 0
    assert all("differ" not in line for line in label_maps)  # every pixel equal, fragile ones too


@needs_e2e
def test_resize_and_normalisation_equal_the_originals_bit_for_bit():
    io = load_file(E2E / "io.safetensors")
    outputs = {e["name"]: e for e in json.loads((E2E / "manifest.json").read_text())["outputs"]}
    for entry in photo_entries():
        photo = entry["name"].removeprefix("input.")
        rgb = load_image(E2E / entry["file"])
        assert np.array_equal(rgb, io[entry["name"]].numpy())
        size = keep_ratio_size(*rgb.shape[:2])
        assert list(size) == outputs[f"{photo}.resized_uint8"]["resized_hw"]
        resized = io[f"{photo}.resized_uint8"]
        assert size == tuple(resized.shape[:2])
        assert torch.equal(torch.from_numpy(resize_uint8(rgb, size)), resized)
        assert torch.equal(prepare_image(rgb), io[f"{photo}.preprocessed"])  # exact, though atol is 1e-4


@needs_e2e
def test_the_strided_step_of_a_photo_entry_follows_from_its_shape_when_not_stated():
    manifest = json.loads((E2E / "manifest.json").read_text())
    strided = [e for e in manifest["outputs"] if e["name"].endswith("_strided")]
    stated = {e["name"]: e.pop("strided_step") for e in strided}
    assert len(stated) >= 12 and strided_steps(manifest) == stated  # avg: resized size; final: the photo's own


def corrupted_copy(tmp_path: Path) -> Path:
    """The folder with chelsea left out (fewer entries: faster, and nothing is hard-coded), one pixel of
    astronaut's PNG changed and one value of coffee's stored normalised tensor moved by 1e-3."""
    folder = tmp_path / "e2e"
    shutil.copytree(E2E, folder)
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"] = [e for e in manifest["inputs"] if "chelsea" not in e["name"]]
    manifest["outputs"] = [e for e in manifest["outputs"] if "chelsea" not in e["name"]]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    astronaut = folder / "images" / "astronaut_500x375.png"
    pixels = np.array(Image.open(astronaut))
    pixels[100, 100, 1] ^= 1
    Image.fromarray(pixels).save(astronaut)
    io = load_file(folder / "io.safetensors")
    io["e2e.coffee_600x400.preprocessed"][0, 2, 7, 7] += 1e-3
    save_file(io, folder / "io.safetensors")
    return folder


@needs_e2e
def test_a_changed_photo_and_a_changed_tensor_fail_with_a_line_naming_them(tmp_path):
    rows = {r.name: r for r in verify_reference(corrupted_copy(tmp_path))}
    assert not any("chelsea" in name for name in rows)
    photo = rows["input.e2e.astronaut_500x375"]
    line = format_table([photo]).splitlines()[1]
    assert photo.status == "FAIL" and "images/astronaut_500x375.png: sha256" in line and "photo was changed" in line
    assert "1 decoded value(s) differ" in photo.note
    assert rows["e2e.astronaut_500x375.resized_uint8"].status == "FAIL"  # the change travels down the chain
    tensor = rows["e2e.coffee_600x400.preprocessed"]
    assert tensor.status == "FAIL" and tensor.tolerance == "atol 0.0001" and abs(tensor.diff - 1e-3) < 1e-6
    untouched = [r for name, r in rows.items() if "coffee" in name and name != tensor.name]
    assert len(untouched) == 9 and all(r.status == "ok" for r in untouched)


@needs_e2e
def test_a_missing_photo_is_a_one_line_error_naming_it(tmp_path):
    folder = tmp_path / "e2e"
    shutil.copytree(E2E, folder, ignore=shutil.ignore_patterns("coffee_600x400.png"))
    with pytest.raises(OvsegError) as err:
        verify_reference(folder)
    message = str(err.value)
    assert (
        message.endswith(
            "images/coffee_600x400.png: no such file (the photo of input.e2e.coffee_600x400 in manifest.json)"
        )
        and "\n" not in message
    )


def opencv_linear_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's fixed-point INTER_LINEAR on uint8 as the reference-e2e README writes it out: what the
    original computed, whichever OpenCV is installed here."""

    def axis(src: int, dst: int, clamp_weight: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = 1.0 / (dst / src)
        f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
        x = np.floor(f).astype(np.int64)
        t = (f - x.astype(np.float32)).astype(np.float32)
        if clamp_weight:
            t = np.where((x < 0) | (x >= src - 1), np.float32(0), t)
            x = np.clip(x, 0, src - 1)
        w0 = np.rint((np.float32(1) - t) * np.float32(2048)).astype(np.int64)
        w1 = np.rint(t * np.float32(2048)).astype(np.int64)
        return np.clip(x, 0, src - 1), np.clip(x + 1, 0, src - 1), np.stack([w0, w1])

    (h, w), src = size, image.astype(np.int64)
    x0, x1, wx = axis(image.shape[1], w, clamp_weight=True)
    y0, y1, wy = axis(image.shape[0], h, clamp_weight=False)
    rows = src[:, x0] * wx[0][None, :, None] + src[:, x1] * wx[1][None, :, None]  # (H, w, C), up to 255·2048
    top, bottom = rows[y0] >> 4, rows[y1] >> 4
    out = (((top * wy[0][:, None, None]) >> 16) + ((bottom * wy[1][:, None, None]) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def test_the_resize_is_opencvs_fixed_point_bilinear_on_random_sizes_up_and_down():
    rng = np.random.default_rng(0)
    for _ in range(30):
        src_h, src_w, dst_h, dst_w = (int(v) for v in rng.integers(2, 90, 4))
        image = rng.integers(0, 256, (src_h, src_w, 3), dtype=np.uint8)
        got = resize_uint8(image, (dst_h, dst_w))
        assert got.shape == (dst_h, dst_w, 3) and got.dtype == np.uint8
        assert np.array_equal(got, opencv_linear_reference(image, (dst_h, dst_w))), (src_h, src_w, dst_h, dst_w)


def test_a_float_bilinear_resize_is_not_close_enough():
    """Why OpenCV is called: torch's bilinear plus rounding is off by one grey level on many values."""
    image = np.random.default_rng(1).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    size = keep_ratio_size(300, 451)
    approx = (
        torch.nn.functional.interpolate(
            torch.tensor(image).permute(2, 0, 1)[None].float(), size=size, mode="bilinear", align_corners=False
        )
        .round()[0]
        .permute(1, 2, 0)
    )
    exact = torch.from_numpy(resize_uint8(image, size)).float()
    assert (approx - exact).abs().max() == 1 and (approx != exact).float().mean() > 0.05


def test_keep_ratio_size_rounds_half_up_like_mmcv():
    assert keep_ratio_size(375, 500) == (448, 597)  # 597.33
    assert keep_ratio_size(300, 451) == (448, 673)  # 673.49
    assert keep_ratio_size(400, 600) == (448, 672)
    assert keep_ratio_size(256, 262) == (448, 459)  # 458.5 exactly: half rounds up, not to even
    assert keep_ratio_size(100, 1000) == (205, 2048)  # the long side caps the scale: 204.8 -> 205


def test_an_image_at_the_processing_size_is_only_normalised_and_a_read_only_input_is_fine():
    image = np.random.default_rng(2).integers(0, 256, (448, 500, 3), dtype=np.uint8)
    image.setflags(write=False)
    assert resize_uint8(image, (448, 500)) is image
    out = prepare_image(image)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    assert out.shape == (1, 3, 448, 500) and out.is_contiguous()
    assert torch.equal(out[0], (torch.from_numpy(image.copy()).permute(2, 0, 1).float() - mean) / std)
