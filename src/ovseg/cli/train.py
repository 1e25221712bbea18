"""ovseg train --cfg CONFIG [--opts key=value ...]"""

from __future__ import annotations

import argparse

HELP = ("Train OVSegmentor (stage 1 or 2, from the config) on CPU or GPU; launch it with torchrun or srun "
        "for several processes or nodes.")
EXAMPLE = "ovseg train --cfg configs/quickstart/stage1.yml --output runs/s1 --opts train.max_steps=100"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", required=True, help="training config (YAML, `_base_` inheritance)")
    p.add_argument("--opts", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides (may be given more than once)")
    p.add_argument("--output", help="output folder (default: the config's `output`)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (a short smoke run)")
    p.add_argument("--resume", help="resume from this run folder's checkpoints (default: auto-resume in --output)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engine.distributed import read_launch
    from ..engine.trainer import train

    opts = list(args.opts)
    if args.max_steps is not None:
        opts.append(f"train.max_steps={args.max_steps}")
    if args.resume:
        opts.append(f"checkpoint.resume={args.resume}")
    cfg = load_config(args.cfg, opts)
    result = train(cfg, args.output)
    if read_launch().rank != 0:  # one summary per job
        return 0
    print(f"trained {result.steps} steps; final weights: {result.final}")
    if result.best is not None:
        print(f"best on validation: {result.best} (mIoU {result.best_val_miou:.1f}, bg_thresh {result.best_bg_thresh})")
    if result.best_val_top1 is not None:
        print(f"best zero-shot classification top-1 on validation: {result.best_val_top1:.1f} "
              f"({result.output / 'best_top1.safetensors'})")
    return 0
