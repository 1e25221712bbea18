"""Inference speed of the full zero-shot harness (short side 448, slide 448/224, top-5, background threshold).

Prints one JSON line per measured mode: ms/image, images/s, peak memory. Random weights of the chosen preset
(the paper's ViT-B/16 + BERT-base by default); VOC-sized photos (500x375) from scikit-image; image decoding
excluded; the VOC class embeddings are computed once before timing, as in an evaluation.

    python benchmarks/bench_inference.py --device cpu --images 8
    python benchmarks/bench_inference.py --device cuda --images 256 --batch-crops 32 --precision bf16
    python benchmarks/bench_inference.py --device cpu --precision bf16-matmul --modes single agreement
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
from PIL import Image

import ovseg
from ovseg.class_presets import VOC
from ovseg.evaluation.datasets import Sample
from ovseg.evaluation.predictor import HarnessPredictor
from ovseg.inference.preprocess import prepare_image


def photos(count: int, height: int, width: int) -> list[np.ndarray]:
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    return [np.asarray(Image.fromarray(sources[i % len(sources)]).resize((width, height), Image.BILINEAR))
            for i in range(count)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_single(seg: ovseg.Segmenter, images: list[np.ndarray], warmup: int) -> tuple[list[float], list]:
    """Segmenter.predict image by image (what the demo does)."""
    times, labels = [], []
    for i, image in enumerate(images):
        seg.image_cache.clear()  # no caching across images
        sync(seg.device)
        start = time.perf_counter()
        pred = seg.predict(image, list(VOC))  # at seg.cfg.precision
        sync(seg.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        labels.append(pred.labels)
    return times, labels


def run_batched(seg: ovseg.Segmenter, images: list[np.ndarray], per_batch: int) -> tuple[float, list]:
    """The evaluation predictor: windows of several images share forward passes."""
    predictor = HarnessPredictor(seg, list(VOC), seg.cfg.bg_thresh)
    samples = [Sample(str(i), prepare_image(im), im.shape[:2], torch.zeros(1)) for i, im in enumerate(images)]
    predictor(samples[:per_batch])  # warm-up
    sync(seg.device)
    start, labels = time.perf_counter(), []
    for s in range(0, len(samples), per_batch):
        labels += predictor(samples[s : s + per_batch])
    sync(seg.device)
    return time.perf_counter() - start, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="ovsegmentor/vit_b16_bert_8g")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--batch-crops", type=int, default=8)
    p.add_argument("--images-per-batch", type=int, default=16)
    p.add_argument("--precision", choices=["fp32", "bf16-matmul", "bf16"], default="fp32")
    p.add_argument("--modes", nargs="+", default=["single", "batched"])
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = ovseg.create_model(args.preset).to(device).eval()
    cfg = ovseg.load_config().evaluate.seg
    cfg.batch_crops = args.batch_crops
    cfg.precision = args.precision
    seg = ovseg.Segmenter(model, cfg)
    seg.class_embeddings(list(VOC))
    images = photos(args.images + args.warmup, args.height, args.width)

    common = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
              "preset": args.preset, "size": [args.height, args.width], "precision": args.precision,
              "threads": torch.get_num_threads(), "batch_crops": args.batch_crops, "torch": torch.__version__}
    if "single" in args.modes:
        times, _ = run_single(seg, images, args.warmup)
        med = statistics.median(times)
        print(json.dumps({**common, "mode": "single", "images": len(times), "ms_per_image": med * 1000,
                          "images_per_s": 1 / med, "peak_mb": peak_memory_mb(device)}), flush=True)
    if "agreement" in args.modes:  # labels at --precision against fp32 labels on the same images
        _, low = run_batched(seg, images, args.images_per_batch)
        seg.cfg.precision = "fp32"
        _, ref = run_batched(seg, images, args.images_per_batch)
        seg.cfg.precision = args.precision
        same = sum(int((a == b).sum()) for a, b in zip(ref, low, strict=True))
        total = sum(a.numel() for a in ref)
        print(json.dumps({**common, "mode": "agreement", "images": len(images),
                          "label_agreement_with_fp32": same / total}), flush=True)
    if "batched" in args.modes:
        total, _ = run_batched(seg, images[args.warmup :], args.images_per_batch)
        n = len(images) - args.warmup
        print(json.dumps({**common, "mode": "batched", "images": n, "images_per_batch": args.images_per_batch,
                          "ms_per_image": total / n * 1000, "images_per_s": n / total,
                          "peak_mb": peak_memory_mb(device)}), flush=True)


if __name__ == "__main__":
    main()
