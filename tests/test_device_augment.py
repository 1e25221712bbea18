"""Augmentation on the training device: the batched path draws what the per-sample path draws."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.config import load_config
from ovseg.data import augment
from ovseg.data.augment import RAND_OPS, RandAugment, RandomErasing, TrainTransform, normalize_0_1
from ovseg.data.device_augment import DeviceAugment
from ovseg.factory import preset_path

SYMMETRIC = {
    "rotate",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
}


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """(8, 64, 64, 3) uint8: real photos, their centre squares resized to 64 px."""
    from skimage import data

    photos = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.camera(),
        data.cat(),
        data.immunohistochemistry(),
        data.retina(),
    ]
    out = []
    for photo in photos:
        img = Image.fromarray(photo).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        out.append(np.asarray(img.resize((64, 64), Image.BILINEAR, box=(left, top, left + side, top + side))))
    return np.stack(out)


def batch_of(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()


def collated(crops: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8: the workers' deferred crops as the collator stacks them."""
    return torch.from_numpy(crops)


def forced(name: str) -> RandAugment:
    return RandAugment(num_ops=1, std=0.0, prob=1.0, ops=[name])


def per_sample(crops: np.ndarray, transform: TrainTransform) -> torch.Tensor:
    return torch.stack([transform.augment(c) for c in crops])


@pytest.mark.parametrize("name", list(RAND_OPS))
def test_a_forced_op_gives_the_per_sample_result_on_the_batch(crops, name, monkeypatch):
    transform = TrainTransform(64, "paper", stage=1)
    transform.flip_prob, transform.eraser, transform.rand_augment = 0.0, None, forced(name)
    device = DeviceAugment("paper", 1, torch.device("cpu"), seed=3)
    device.flip_prob, device.erase_prob, device.rand_augment = 0.0, 0.0, forced(name)
    batched = device(collated(crops), step=0)
    candidates = []
    for sign in (1.0, -1.0):  # the symmetric ops' direction is drawn per sample: try both
        monkeypatch.setattr(augment, "_signed", lambda level, g=None, s=sign: level * s)
        candidates.append(per_sample(crops, transform))
    monkeypatch.undo()
    error = torch.stack([(batched - c).abs().flatten(1).amax(1) for c in candidates]).amin(0)
    assert error.max() < 1e-5
    assert not torch.allclose(batched, normalize_0_1(batch_of(crops).float() / 255))  # the op did act
    if name in SYMMETRIC:  # and both directions occur in the batch
        matches = torch.stack([(batched - c).abs().flatten(1).amax(1) < 1e-5 for c in candidates])
        assert matches[0].any() and matches[1].any()


def recording(monkeypatch) -> dict[str, list[float]]:
    """Wrap every op to record the levels it is applied with."""
    levels: dict[str, list[float]] = {name: [] for name in RAND_OPS}
    for name, op in list(RAND_OPS.items()):

        def wrapped(x, level, g=None, name=name, op=op):
            levels[name].extend(level.tolist())
            return op(x, level, g)

        monkeypatch.setitem(RAND_OPS, name, wrapped)
    return levels


def test_the_random_policy_draws_ops_and_magnitudes_alike(crops, monkeypatch):
    reps = 200  # 1,600 samples per path, two rounds each: ~107 applications of each op expected
    levels = recording(monkeypatch)
    torch.manual_seed(0)
    transform = TrainTransform(64, "paper", stage=1)
    transform.eraser = None
    for _ in range(reps // 8):
        per_sample(np.concatenate([crops] * 8), transform)
    cpu = {k: list(v) for k, v in levels.items()}
    for v in levels.values():
        v.clear()
    device = DeviceAugment("paper", 1, torch.device("cpu"), seed=0)
    device.erase_prob = 0.0
    for step in range(reps // 8):
        device(collated(np.concatenate([crops] * 8)), step)
    n = 2 * reps * len(crops)  # op draws per path
    for name in RAND_OPS:
        a, b = len(cpu[name]), len(levels[name])
        expected, sd = n * 0.5 / 15, (n * 0.5 / 15 * (1 - 0.5 / 15)) ** 0.5
        assert abs(a - expected) < 4.5 * sd and abs(b - expected) < 4.5 * sd, (name, a, b)
        assert abs(a - b) < 4.5 * sd * 2**0.5, (name, a, b)
    everything = [np.array(sum(d.values(), [])) for d in (cpu, levels)]
    assert abs(len(everything[0]) - len(everything[1])) < 4.5 * (n * 0.25) ** 0.5 * 2**0.5
    for lv in everything:  # clip(N(9, 0.5), 0, 10) / 10
        assert abs(lv.mean() - 0.8996) < 0.005 and abs(lv.std() - 0.0495) < 0.005 and lv.max() <= 1.0


def erased_boxes(x: torch.Tensor) -> list[tuple[int, int] | None]:
    """Per sample: (height, width) of the erased rectangle of a zero batch, or None."""
    out = []
    for sample in x:
        mask = (sample != 0).any(0)
        if not mask.any():
            out.append(None)
            continue
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(mask.sum()) == h * w  # one filled rectangle
        out.append((h, w))
    return out


def test_erasing_draws_the_same_probability_and_box_sizes(crops):
    n, size = 2000, 32
    torch.manual_seed(0)
    eraser = RandomErasing(p=0.25)
    cpu = erased_boxes(torch.cat([eraser(torch.zeros(1, 3, size, size)) for _ in range(n)]))
    device = DeviceAugment("paper", 1, torch.device("cpu"), seed=0)
    device.reseed(0)
    batched = device.erase(torch.zeros(n, 3, size, size))
    boxes = erased_boxes(batched)
    stats = []
    for found in (cpu, boxes):
        sizes = np.array([b for b in found if b is not None], dtype=float)
        area = sizes[:, 0] * sizes[:, 1] / size**2
        stats.append((len(sizes) / n, area.mean(), np.log(sizes[:, 0] / sizes[:, 1]).mean()))
        assert area.min() >= 0.01 and area.max() <= 0.36
    (p_cpu, area_cpu, aspect_cpu), (p_dev, area_dev, aspect_dev) = stats
    assert abs(p_cpu - 0.25) < 0.04 and abs(p_dev - 0.25) < 0.04
    assert abs(area_cpu - area_dev) < 0.025 and abs(aspect_cpu - aspect_dev) < 0.15
    noise = batched[batched != 0]
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02


def test_a_seed_and_step_fix_the_batch(crops):
    images = collated(crops)
    first = DeviceAugment("paper", 1, torch.device("cpu"), seed=7)
    again = DeviceAugment("paper", 1, torch.device("cpu"), seed=7)
    a = [first(images, 0), first(images, 0, partner=True), first(images, 1)]
    b = [again(images, 0), again(images, 0, partner=True), again(images, 1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[2])  # the next step draws anew
    assert not torch.equal(DeviceAugment("paper", 1, torch.device("cpu"), seed=7, rank=1)(images, 0), a[0])
    # partners (stage 2) are only flipped and normalised
    plain = normalize_0_1(batch_of(crops).float() / 255)
    assert all(torch.allclose(p, plain[i]) or torch.allclose(p, plain[i].flip(-1)) for i, p in enumerate(a[1]))


def test_deferred_items_are_the_uint8_crop(crops):
    buf = __import__("io").BytesIO()
    Image.fromarray(crops[0]).save(buf, "PNG")
    deferred = TrainTransform(32, "none", deferred=True)(buf.getvalue())
    full = TrainTransform(32, "none")(buf.getvalue())
    assert deferred.dtype == torch.uint8 and deferred.shape == (32, 32, 3)
    device = DeviceAugment("none", 1, torch.device("cpu"))
    assert torch.allclose(device(deferred[None], 0)[0], full, atol=1e-6)


SMALL = [
    "data.batch_size=4",
    "data.image_size=32",
    "data.num_workers=0",
    "data.shuffle_buffer=4",
    "model.img_encoder.img_size=32",
    "model.img_encoder.embed_dim=32",
    "model.img_encoder.num_heads=[2,2]",
    "model.img_encoder.depths=[1,0]",
    "model.proj_inner_dim=64",
    "model.output_dim=32",
    "evaluate.val_every_steps=0",
    "model.use_entityloss=false",
]


def folder_corpus(root, crops: np.ndarray) -> list[str]:
    root.mkdir()
    for i, c in enumerate(crops):
        Image.fromarray(c).save(root / f"img{i}.jpg", quality=90)
        (root / f"img{i}.txt").write_text("a photo of a cat")
    return ["data.type=folder", f"data.image_root={root}"]


def test_a_seeded_training_run_sees_the_same_augmented_batches(tmp_path, crops, monkeypatch):
    from ovseg.data import builder
    from ovseg.engine.trainer import TrainingRun

    opts = SMALL + folder_corpus(tmp_path / "images", crops)
    auto = TrainingRun(load_config(preset_path("quickstart/stage1"), opts), tmp_path / "auto")
    assert auto.augment is None  # auto without a GPU: the workers augment per sample
    # the batched path as a GPU run takes it, here on the CPU (what a CUDA device would run)
    monkeypatch.setattr(builder, "resolve_augment_device", lambda setting, device: torch.device("cpu"))
    batches = []
    for i in range(2):  # one after the other: each run seeds the global generators that the crops draw from
        run = TrainingRun(load_config(preset_path("quickstart/stage1"), opts), tmp_path / f"run{i}")
        assert run.augment is not None and run.augment.device == torch.device("cpu")
        batches.append(run.to_device(next(iter(run.loader))))
    assert batches[0]["image"].dtype == torch.float32 and batches[0]["image"].shape == (4, 3, 32, 32)
    assert torch.equal(batches[0]["image"], batches[1]["image"])
    assert next(iter(auto.loader))["image"].dtype == torch.float32  # per sample, normalised in the workers


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_augment_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path, crops):
    opts = SMALL + folder_corpus(tmp_path / "images", crops) + ["data.augment_device=cuda"]
    args = [
        sys.executable,
        "-m",
        "ovseg",
        "train",
        "--cfg",
        str(preset_path("quickstart/stage1")),
        "--output",
        str(tmp_path / "out"),
        "--max-steps",
        "1",
        "--opts",
        *opts,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "augment_device" in line]
    assert len(lines) == 1 and "no" in lines[0] and "cuda" in lines[0].lower()
