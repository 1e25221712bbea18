"""CPU inference of the full harness at each ``evaluate.seg.precision``, against the original's regime.

The original encodes every 448 window twice (features, then attention maps) one window at a time in fp32;
``original`` replays that regime with ovseg's own encoder (``Segmenter`` with one window per pass and each
pass run twice), the fair baseline on this machine. Every (round, mode) runs in a fresh process and the
modes alternate round by round, so a slow spell of a shared machine hits all of them. The paper's ViT-B/16 +
BERT-base with random weights (seed 0); VOC-sized photos (500x375) from scikit-image; decoding excluded; the
VOC class embeddings computed before timing. ``--agreement`` adds each precision's share of pixels whose label
equals fp32's on the fixed photo set (``PHOTOS``).

    python benchmarks/bench_cpu_precision.py --rounds 3 --images 3 --agreement
    python benchmarks/bench_cpu_precision.py --modes original auto --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

MODES = ("original", "fp32", "auto", "bf16-matmul", "bf16")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera")


def photo_set(count: int | None = None, size: tuple[int, int] = (500, 375)) -> list[np.ndarray]:
    """The fixed real photos (scikit-image, offline), resized to ``size`` (width, height); grey ones as RGB."""
    from skimage import data

    out = []
    for name in PHOTOS[:count]:
        pixels = getattr(data, name)()
        pixels = np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels[..., :3]
        out.append(np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR)))
    return out


def segmenter(mode: str, preset: str):
    import ovseg
    from ovseg.class_presets import VOC

    torch.manual_seed(0)
    model = ovseg.create_model(preset).eval()
    cfg = ovseg.load_config().evaluate.seg
    cfg.precision = "fp32" if mode == "original" else mode
    if mode == "original":  # one window per pass, each pass twice: the original's regime
        cfg.batch_crops = 1
        encode = model.encode_image
        model.encode_image = lambda *a, **k: (encode(*a, **k), encode(*a, **k))[1]
    seg = ovseg.Segmenter(model, cfg)
    seg.class_embeddings(list(VOC))
    return seg, list(VOC)


def time_mode(mode: str, preset: str, images: int, warmup: int) -> dict:
    """One process: median seconds per image of ``Segmenter.predict`` at ``mode``."""
    seg, names = segmenter(mode, preset)
    photos = photo_set()
    times = []
    for i in range(warmup + images):
        seg.image_cache.clear()
        start = time.perf_counter()
        seg.predict(photos[i % len(photos)], names)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"mode": mode, "seconds": times, "median_s": statistics.median(times)}


def agreement(preset: str) -> dict:
    """Share of pixels whose label equals fp32's, per precision, over the photo set (one process)."""
    seg, names = segmenter("fp32", preset)
    photos = photo_set()
    labels = {}
    for mode in ("fp32", "auto", "bf16-matmul", "bf16"):
        seg.cfg.precision = mode
        seg.image_cache.clear()
        labels[mode] = [seg.predict(p, names).labels for p in photos]
    total = sum(t.numel() for t in labels["fp32"])
    return {mode: {"share": sum(int((a == b).sum()) for a, b in zip(labels["fp32"], got, strict=True)) / total,
                   "worst_photo": min(float((a == b).float().mean()) for a, b in zip(labels["fp32"], got, strict=True))}
            for mode, got in labels.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=3, help="timed images per process")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="ovsegmentor/vit_b16_bert_8g")
    p.add_argument("--agreement", action="store_true", help="also measure label agreement with fp32")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child == "agreement":
        print(json.dumps(agreement(args.preset)))
        return
    if args.child:
        print(json.dumps(time_mode(args.child, args.preset, args.images, args.warmup)))
        return
    runs: dict[str, list[float]] = {m: [] for m in args.modes}
    for r in range(args.rounds):
        for mode in args.modes:
            result = _child(args, mode)
            runs[mode].append(result["median_s"])
            print(json.dumps({"round": r, **result}), flush=True)
    base = statistics.median(runs["original"]) if "original" in runs else None
    summary = {m: {"median_s": statistics.median(v), "rounds": v,
                   "speedup_vs_original": base / statistics.median(v) if base else None} for m, v in runs.items()}
    if args.agreement:
        summary["agreement_with_fp32"] = _child(args, "agreement")
    print(json.dumps({"summary": summary, "threads": args.threads, "torch": torch.__version__}, indent=1))


def _child(args: argparse.Namespace, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--preset", args.preset, "--images", str(args.images),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
