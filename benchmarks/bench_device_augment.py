"""Loader CPU time per sample with augmentation in the workers (``data.augment_device=cpu``) against the
workers' decode + crop only (``auto``/``cuda``: the rest runs batched on the training device), and the cost
of that batched augmentation per batch on the CPU.

Both loaders read the same 256-px JPEG shards (``bench_loader``'s) in the main process with one torch
thread (as one DataLoader worker runs), alternating batch by batch; CPU time is the process's
(``time.process_time``), not wall time, so a loaded machine does not distort it. Prints one JSON line.

    python benchmarks/bench_device_augment.py --rounds 3 --samples 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ovseg.config import load_config
from ovseg.data.builder import build_collator, build_train_dataset
from ovseg.data.device_augment import DeviceAugment

sys.path.insert(0, str(Path(__file__).parent))
from bench_loader import prepared_shards  # noqa: E402


def loader(shards: Path, args: argparse.Namespace, deferred: bool):
    """The stage-1 loader: every augmentation per sample in the loader, or (``deferred``) decode + crop only,
    with the batched ``DeviceAugment`` a GPU run would apply, here on the CPU."""
    cfg = load_config(
        None,
        [
            "data.type=webdataset",
            f"data.shards={shards}",
            f"data.image_size={args.image_size}",
            "model.use_entityloss=true",
        ],
    )
    augment = DeviceAugment(cfg.data.augment, 1, torch.device("cpu"), seed=cfg.seed) if deferred else None
    dataset = build_train_dataset(cfg, deferred=deferred)
    batches = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, num_workers=0, collate_fn=build_collator(cfg, 0), drop_last=True
    )
    return dataset, batches, augment


def endless(dataset, batches):
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        yield from batches
        epoch += 1


def timed(stream, augment=None, step: int = 0) -> np.ndarray:
    """[loader CPU s, batched-augmentation CPU s, samples] for the next batch."""
    t0 = time.process_time()
    batch = next(stream)
    t1 = time.process_time()
    if augment is not None:
        assert augment(batch["image"], step).dtype == torch.float32
    return np.array([t1 - t0, time.process_time() - t1, len(batch["image"])])


def measure(shards: Path, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    full_ds, full_loader, _ = loader(shards, args, deferred=False)
    crop_ds, crop_loader, augment = loader(shards, args, deferred=True)
    full, crop = endless(full_ds, full_loader), endless(crop_ds, crop_loader)
    count = max(1, args.samples // args.batch)
    timed(full), timed(crop, augment)  # warm-up
    per_sample = {"cpu": [], "crop_only": []}
    aug_per_batch = []
    for r in range(args.rounds):
        totals = np.zeros((2, 3))
        for step in range(count):  # batch by batch: both loaders see the other jobs' load alike
            totals[0] += timed(full)
            totals[1] += timed(crop, augment, r * count + step)
        per_sample["cpu"].append(totals[0, 0] / totals[0, 2])
        per_sample["crop_only"].append(totals[1, 0] / totals[1, 2])
        aug_per_batch.append(totals[1, 1] / count)
    cpu, crop_only = np.median(per_sample["cpu"]), np.median(per_sample["crop_only"])
    return {
        "loader_cpu_ms_per_sample": {
            "augment_device=cpu": round(1e3 * cpu, 3),
            "decode+crop (auto/cuda)": round(1e3 * crop_only, 3),
        },
        "ratio": round(float(cpu / crop_only), 2),
        "batched_augment_cpu_ms_per_batch": round(1e3 * float(np.median(aug_per_batch)), 1),
        "batched_augment_cpu_ms_per_sample": round(1e3 * float(np.median(aug_per_batch)) / args.batch, 3),
        "rounds": {k: [round(1e3 * v, 3) for v in vs] for k, vs in per_sample.items()},
        "ratio_per_round": [round(c / k, 2) for c, k in zip(per_sample["cpu"], per_sample["crop_only"], strict=True)],
        "batch": args.batch,
        "image_size": args.image_size,
        "samples_per_round": count * args.batch,
        "torch_threads": 1,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", type=int, default=512, help="samples to write")
    p.add_argument("--samples", type=int, default=512, help="samples per loader and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(prepared_shards(Path(tmp), args.write), args)))


if __name__ == "__main__":
    main()
