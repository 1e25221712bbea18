"""Training speed: samples/s, model FLOPs per sample (counted) and MFU of stage-1 and stage-2 steps.

The paper's model (ViT-B/16 + BERT-base, random weights, BERT trainable in stage 1 and frozen in stage 2),
224x224 images, captions from the embedded dataset's grammar (questions/answers by the paper's entity
vocabulary), AdamW (fused on CUDA), bf16 autocast on CUDA. FLOPs are counted with
torch.utils.flop_counter over one full step (forward + backward); MFU = FLOPs/sample x samples/s / peak,
with the peak stated in the output (H100 SXM dense bf16: 989.4 TFLOP/s; pass --peak-tflops otherwise).

    python benchmarks/bench_train.py --device cuda --stage 1 --batch 128
    python benchmarks/bench_train.py --device cpu --preset quickstart/stage1 --batch 128 --image-size 64 \
        --text-cache --precision fp32 bf16-stem --steps 20

Several ``--precision`` values alternate step by step (one JSON line each), so that a machine whose speed
drifts compares them fairly. ``--text-cache`` caches a frozen text encoder's features as the trainer does
(the quickstart's MiniLM), instead of running it every step.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ovseg.config import load_config
from ovseg.data.collate import CaptionCollator
from ovseg.data.entities import EntityExtractor
from ovseg.data.scenes.dataset import sample_scene
from ovseg.engine.compilation import compile_hot_modules
from ovseg.engine.objective import compute_losses
from ovseg.engine.optim import build_optimizer
from ovseg.engine.precision import StepPrecision
from ovseg.engine.text_features import TextFeatures
from ovseg.factory import create_model, preset_path
from ovseg.model.text import build_tokenizer

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def batch_of(cfg, size: int, image_size: int, device: torch.device, stage: int) -> dict:
    rng = random.Random(0)
    captions = [sample_scene(rng).caption.replace("ball", "dog").replace("box", "car") for _ in range(size)]
    items = [{"image": torch.randn(3, image_size, image_size), "caption": c, "index": i, "entities": []}
             for i, c in enumerate(captions)]
    if stage == 2:
        for it in items:
            it["cross_image"], it["cross_entity"] = torch.randn(3, image_size, image_size), "dog"
    extractor = EntityExtractor() if cfg.model.use_entityloss else None
    batch = CaptionCollator(extractor, cfg.data.answer_templates, cfg.data.cross_entity_template)(items)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="ovsegmentor/vit_b16_bert_8g")
    p.add_argument("--stage", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "bf16-stem", "auto"], default=["auto"],
                   help="train.amp's modes; several alternate step by step")
    p.add_argument("--text-cache", action="store_true",
                   help="cache the frozen text encoder's features as the trainer does (quickstart presets)")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--opts", nargs="*", default=[])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the hot modules as train.compile does (encoders, heads, entity decoder)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also print the N most expensive GPU kernels and the GPU-busy fraction of a step")
    args = p.parse_args()
    device = torch.device(args.device)
    opts = ["model.use_entityloss=true", *(["model.use_maskloss=true", "model.text_encoder.fixed=true"]
                                           if args.stage == 2 else []), *args.opts]
    cfg = load_config(preset_path(args.preset), opts)
    torch.manual_seed(0)
    model = create_model(cfg).to(device).train()
    te = cfg.model.text_encoder
    cache = args.text_cache and te.fixed
    text = TextFeatures(model, build_tokenizer(te.name, te.tokenizer), te.max_length, cache=cache,
                        cache_dtype=torch.bfloat16 if cache and cfg.train.text_cache_bf16 else None,
                        buckets=cfg.train.text_buckets)
    optimizer = build_optimizer(model, cfg.train, 1e-4)
    batch = batch_of(cfg, args.batch, args.image_size, device, args.stage)
    modes = {name: StepPrecision.for_training(name, device) for name in args.precision}
    first = args.precision[0]

    def step(mode: str = first) -> None:
        with modes[mode].applied(model):
            losses = compute_losses(model, batch, text, cfg.model)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cfg.model.use_maskloss:
            model.momentum_update()

    if cache:
        step()  # fills the text cache, so that the frozen encoder's passes are not counted
    with FlopCounterMode(display=False) as counter:
        step()  # counted eagerly: compiled graphs do the same model FLOPs
    flops_per_sample = counter.get_total_flops() / args.batch
    warmup_start = time.perf_counter()
    if args.compile:
        compile_hot_modules(model)
    for i in range(args.warmup):
        for mode in modes:
            step(mode)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"warm-up step {i + 1}: {time.perf_counter() - warmup_start:.1f} s", file=sys.stderr, flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - warmup_start
    seconds = timed_steps(step, list(modes), args.steps, device)
    busy = profile(step, device, args.profile) if args.profile and device.type == "cuda" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    memory = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    for mode, total in seconds.items():
        rate = args.steps * args.batch / total
        print(json.dumps({"device": name, "preset": args.preset, "stage": args.stage, "batch": args.batch,
                          "image_size": args.image_size, "precision": mode, "alternated": len(modes) > 1,
                          "text_cache": cache, "samples_per_s": rate,
                          "gflops_per_sample": flops_per_sample / 1e9, "peak_tflops": peak,
                          "mfu": flops_per_sample * rate / (peak * 1e12) if peak else None, "peak_mb": memory,
                          "compile": args.compile, "warmup_s": warmup_s, "gpu_busy_fraction": busy,
                          "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)


def timed_steps(step, modes: list[str], steps: int, device: torch.device) -> dict[str, float]:
    """Seconds per mode for ``steps`` steps each. One mode: timed as a whole (no synchronisation between
    steps); several: alternated step by step, each step timed alone."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = dict.fromkeys(modes, 0.0)
    start = time.perf_counter()
    for _ in range(steps):
        for mode in modes:
            if len(modes) > 1:
                sync()
                start = time.perf_counter()
            step(mode)
            if len(modes) > 1:
                sync()
                seconds[mode] += time.perf_counter() - start
    if len(modes) == 1:
        sync()
        seconds[modes[0]] = time.perf_counter() - start
    return seconds


def profile(step, device: torch.device, top: int) -> float:
    """Print the top GPU kernels of 3 steps; return the fraction of wall time the GPU was busy (kernels'
    self time / wall: below 1 means the GPU waited for the host — launches, syncs or data)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    print(events.table(sort_by="self_device_time_total", row_limit=top), flush=True)
    gpu = sum(e.self_device_time_total for e in events) / 1e6
    return gpu / wall


if __name__ == "__main__":
    main()
