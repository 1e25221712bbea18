"""Rehearse the paper's whole pipeline at toy size, with the commands a user runs on the real data.

    python examples/rehearsal.py --output runs/rehearsal            # ~2 minutes on a laptop CPU

It writes everything it needs into ``--output`` and then runs, as separate ``ovseg`` commands:

1. a caption corpus as img2dataset writes it (webdataset ``.tar`` shards of ``.jpg`` + ``.txt`` + ``.json``),
   made from the embedded scene generator's training split, and ``ovseg prepare`` on it;
2. stage 1 from a DINO-format backbone file (``dino_vitbase16_pretrain.pth``'s key layout, random values at the
   toy width), validated every epoch on a VOC-layout segmentation folder and a class-folder classification set
   (both from the scenes' validation split, never the training split), keeping ``best_miou.safetensors``;
3. stage 2 from stage 1's ``best_miou.safetensors``;
4. ``ovseg eval`` (segmentation and classification) and ``ovseg demo`` on the stage-2 result.

The scores mean nothing (random backbone, a few steps): the rehearsal proves that the files, formats and
commands of docs/training.md fit together before a cluster is booked. CI runs it (tests/test_rehearsal.py).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from ovseg.data.scenes.dataset import CaptionedScenes, class_names, entity_vocabulary
from ovseg.factory import preset_path

IMAGE_SIZE = 32  # training and validation size of the toy model (2 x 2 patches of 16)
SCENE_SIZE = 64  # rendered scenes; training crops them to IMAGE_SIZE
VOC_BACKGROUND, VOC_IGNORE = 0, 255


def write_corpus(folder: Path, n: int, per_shard: int = 16) -> Path:
    """img2dataset's output layout: ``00000.tar`` … with ``{key}.jpg``, ``{key}.txt``, ``{key}.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = CaptionedScenes("train", size=n, image_size=SCENE_SIZE, seed=0)
    for shard in range(0, n, per_shard):
        with wds.TarWriter(str(folder / f"{shard // per_shard:05d}.tar")) as sink:
            for i in range(shard, min(shard + per_shard, n)):
                image, _ = scenes.render(i)
                caption = scenes.scenes[i].caption
                key = f"{i:09d}"
                meta = {"key": key, "caption": caption, "status": "success", "width": SCENE_SIZE,
                        "height": SCENE_SIZE}
                sink.write({"__key__": key, "jpg": jpeg(image), "txt": caption, "json": meta})
    return folder


def write_vocabulary(path: Path) -> Path:
    """The scenes' entity vocabulary in ``ovseg prepare --vocabulary``'s JSON form."""
    vocab = entity_vocabulary()
    path.write_text(json.dumps({"entities": vocab.entities, "synonyms": vocab.synonyms}, indent=1))
    return path


def write_voc(root: Path, n: int) -> Path:
    """A PASCAL VOC 2012 folder layout holding validation scenes: background labelled 0, the scene objects
    (not VOC classes) 255, so mIoU exercises the harness without claiming a meaning."""
    scenes = CaptionedScenes("val", size=n, image_size=48, seed=0)
    stems = [f"2008_{i:06d}" for i in range(n)]
    for stem, i in zip(stems, range(n), strict=True):
        image, labels = scenes.render(i)
        save(root / "JPEGImages" / f"{stem}.jpg", Image.fromarray(image), quality=95)
        voc = np.where(labels == 0, VOC_BACKGROUND, VOC_IGNORE).astype(np.uint8)
        save(root / "SegmentationClass" / f"{stem}.png", Image.fromarray(voc))
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("".join(f"{s}\n" for s in stems))
    return root


def write_classification(root: Path, n: int) -> tuple[Path, Path]:
    """ImageNet's folder layout (one sub-folder per class) with each validation scene cropped to its largest
    object, and the list of class names; returns (folder, names file)."""
    scenes = CaptionedScenes("val", size=n, image_size=SCENE_SIZE, seed=100)
    names = class_names()
    for i in range(n):
        image, labels = scenes.render(i)
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        if not len(ids):
            continue
        cls = int(ids[counts.argmax()])
        ys, xs = np.nonzero(labels == cls)
        crop = image[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
        save(root / names[cls - 1] / f"val_{i:05d}.png", Image.fromarray(crop))
    names_file = root.parent / "scene_classes.txt"
    names_file.write_text("".join(f"{name}\n" for name in names))
    return root, names_file


def write_dino(path: Path, width: int = 64, depth: int = 4, patch: int = 16, grid: int = 14) -> Path:
    """A plain DINO backbone state dict (``dino_vitbase16_pretrain.pth``'s keys) at the toy width."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    state = {"cls_token": rand(1, 1, width), "pos_embed": rand(1, 1 + grid * grid, width),
             "patch_embed.proj.weight": rand(width, 3, patch, patch), "patch_embed.proj.bias": rand(width),
             "norm.weight": 1 + rand(width), "norm.bias": rand(width)}
    for i in range(depth):
        b = f"blocks.{i}."
        state |= {b + "norm1.weight": 1 + rand(width), b + "norm1.bias": rand(width),
                  b + "attn.qkv.weight": rand(3 * width, width), b + "attn.qkv.bias": rand(3 * width),
                  b + "attn.proj.weight": rand(width, width), b + "attn.proj.bias": rand(width),
                  b + "norm2.weight": 1 + rand(width), b + "norm2.bias": rand(width),
                  b + "mlp.fc1.weight": rand(4 * width, width), b + "mlp.fc1.bias": rand(4 * width),
                  b + "mlp.fc2.weight": rand(width, 4 * width), b + "mlp.fc2.bias": rand(width)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def ovseg(*args: str) -> None:
    """One ``ovseg`` command in its own process, as a user types it; stops the rehearsal on failure."""
    print("$ ovseg " + " ".join(args), flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ovseg", *args])
    if result.returncode:
        sys.exit(f"rehearsal failed at: ovseg {' '.join(args)} (exit {result.returncode})")
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def toy_options(out: Path, voc: Path, cls: Path, names: Path, epochs: int) -> list[str]:
    """The toy model on the prepared corpus, validated every epoch on both folders."""
    return [f"data.shards={out / 'prepared'}", "data.type=webdataset", "data.batch_size=8",
            f"data.image_size={IMAGE_SIZE}", f"model.img_encoder.img_size={IMAGE_SIZE}",
            f"data.entity_vocabulary={out / 'vocabulary.json'}", "model.use_entityloss=true",
            f"train.epochs={epochs}", "train.warmup_epochs=0", "train.log_every=1", "train.device=cpu",
            "checkpoint.every_steps=0", "evaluate.val_every_epochs=1", "evaluate.val_dataset=voc",
            f"evaluate.seg.data_root={voc}", f"evaluate.seg.short_side={IMAGE_SIZE}",
            f"evaluate.seg.crop_size={IMAGE_SIZE}", f"evaluate.seg.stride={IMAGE_SIZE // 2}",
            f"evaluate.cls.data_root={cls}", f"evaluate.cls.classes={names}",
            f"evaluate.cls.resize={IMAGE_SIZE}", f"evaluate.cls.crop_size={IMAGE_SIZE}"]


def rehearse(out: Path, samples: int = 48, val_images: int = 6, epochs: int = 2) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_corpus(out / "corpus", samples)
    write_vocabulary(out / "vocabulary.json")
    voc = write_voc(out / "VOCdevkit" / "VOC2012", val_images)
    cls, names = write_classification(out / "imagenet" / "val", 3 * val_images)
    dino = write_dino(out / "dino_toy16_pretrain.pth")
    ovseg("prepare", "--input", str(out / "corpus"), "--output", str(out / "prepared"), "--workers", "1",
          "--vocabulary", str(out / "vocabulary.json"), "--pairs", "4", "--no-progress")
    common = toy_options(out, voc, cls, names, epochs)
    tiny = str(preset_path("tiny"))
    ovseg("train", "--cfg", tiny, "--output", str(out / "stage1"), "--opts", *common,
          "model.img_encoder.init=dino", f"model.img_encoder.init_checkpoint={dino}")
    stage1 = out / "stage1" / "best_miou.safetensors"
    ovseg("train", "--cfg", tiny, "--output", str(out / "stage2"), "--opts", *common, "train.stage=2",
          "model.use_maskloss=true", "model.text_encoder.fixed=true", f"checkpoint.stage1_checkpoint={stage1}")
    stage2 = str(out / "stage2" / "best_miou.safetensors")
    harness = [f"evaluate.seg.short_side={IMAGE_SIZE}", f"evaluate.seg.crop_size={IMAGE_SIZE}",
               f"evaluate.seg.stride={IMAGE_SIZE // 2}"]
    ovseg("eval", "--checkpoint", stage2, "--dataset", "voc", "--data-root", str(voc), "--output",
          str(out / "eval_voc"), "--no-progress", "--opts", *harness)
    ovseg("eval", "--task", "cls", "--checkpoint", stage2, "--data-root", str(cls), "--classes", str(names),
          "--output", str(out / "eval_cls"), "--no-progress", "--opts", f"evaluate.cls.resize={IMAGE_SIZE}",
          f"evaluate.cls.crop_size={IMAGE_SIZE}")
    ovseg("demo", "--checkpoint", stage2, "--image-folder", str(voc / "JPEGImages"), "--output-folder",
          str(out / "demo"), "--vocab", *class_names(), "--opts", *harness)
    print(f"rehearsal passed: every step's output is under {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/rehearsal", help="folder for the data, runs and results")
    parser.add_argument("--samples", type=int, default=48, help="captioned images in the toy corpus")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each stage")
    args = parser.parse_args()
    rehearse(Path(args.output), samples=args.samples, epochs=args.epochs)


if __name__ == "__main__":
    main()
