"""Training loader throughput on 256-px JPEG shards: samples/s and samples/s per CPU core.

Writes img2dataset-style shards of 256-px JPEGs (photos from scikit-image when installed, else synthetic
textures), runs ``ovseg prepare`` on them, then times the loader that training builds — StreamingCaptions
(read, drafted JPEG decode, stage-1 augmentation: RandomResizedCrop 224, flip, RandAugment m9-mstd0.5,
normalisation, RandomErasing) and the caption collator (entity question/answer) — in DataLoader workers.
Each worker is one process on one core (torch uses one thread there); ``--num-workers 0`` times the main
process with one torch thread. The first batches (worker start-up) are excluded. Prints one JSON line.

    python benchmarks/bench_loader.py --num-workers 2 --samples 2048
    python benchmarks/bench_loader.py --shards data/cc3m-ovseg --num-workers 16 --samples 50000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from webdataset import TarWriter

from ovseg.config import load_config
from ovseg.data.builder import build_collator, build_train_dataset
from ovseg.data.prepare import prepare

CAPTIONS = ["a man walking his dog on the beach", "two cats sleeping on a red sofa", "a bus parked near a building",
            "a bowl of oranges and bananas on a table", "people with umbrellas in the rain"]


def source_photos() -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        rng = np.random.default_rng(0)
        return [np.uint8(np.clip(rng.normal(128, 40, (8, 8, 3)), 0, 255)).repeat(48, 0).repeat(64, 1)
                for _ in range(5)]
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]


def jpeg_256(photo: np.ndarray, i: int) -> bytes:
    """A 256-px (short side) JPEG of a random crop of ``photo``, as img2dataset's resize would give."""
    rng = np.random.default_rng(i)
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(photo[y: y + ch, x: x + cw]).convert("RGB")
    scale = 256 / min(crop.size)
    buf = io.BytesIO()
    crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_shards(folder: Path, samples: int, per_shard: int) -> None:
    photos = source_photos()
    for s in range(0, samples, per_shard):
        with TarWriter(str(folder / f"{s // per_shard:05d}.tar"), encoder=False) as tar:
            for i in range(s, min(samples, s + per_shard)):
                tar.write({"__key__": f"{i:09d}", "jpg": jpeg_256(photos[i % len(photos)], i),
                           "txt": CAPTIONS[i % len(CAPTIONS)].encode()})


def prepared_shards(folder: Path, samples: int) -> Path:
    """``samples`` 256-px photos with captions as shards under ``folder``, then ``ovseg prepare``d."""
    (folder / "raw").mkdir()
    write_shards(folder / "raw", samples, per_shard=256)
    prepare(str(folder / "raw"), folder / "prepared", workers=1, progress=False)
    return folder / "prepared"


def measure(shards: Path, args: argparse.Namespace) -> dict:
    cfg = load_config(None, ["data.type=webdataset", f"data.shards={shards}", f"data.image_size={args.image_size}",
                             "model.use_entityloss=true", f"data.augment={args.augment}"])
    dataset = build_train_dataset(cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, num_workers=args.num_workers,
                                         collate_fn=build_collator(cfg, 0), drop_last=True)
    if args.num_workers == 0:
        torch.set_num_threads(1)
    seen, start, epoch, warm = 0, None, 0, max(1, args.num_workers) * 2
    while seen < args.samples:
        dataset.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if start is None and i + 1 == warm:
                start, seen = time.perf_counter(), 0  # after every worker has delivered its first batches
            elif start is not None:
                seen += len(batch["caption"])
            if start is not None and seen >= args.samples:
                break
        epoch += 1
    rate = seen / (time.perf_counter() - start)
    return {"samples_per_s": round(rate, 1), "per_core": round(rate / max(1, args.num_workers), 1),
            "num_workers": args.num_workers, "batch": args.batch, "samples": seen, "augment": args.augment,
            "image_size": args.image_size, "dataset_samples": len(dataset), "cpu_count": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="an existing `ovseg prepare` output (default: write 256-px shards)")
    p.add_argument("--write", type=int, default=1024, help="samples to write when --shards is not given")
    p.add_argument("--samples", type=int, default=2048, help="samples to time (epochs repeat as needed)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--augment", default="paper", choices=["paper", "none"])
    args = p.parse_args()
    if args.shards:
        print(json.dumps(measure(Path(args.shards), args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(prepared_shards(Path(tmp), args.write), args)))


if __name__ == "__main__":
    main()
