"""ovseg pretrain-ssl [--cfg PRESET] [--output DIR] [--device DEV] [--opts key=value ...]"""

from __future__ import annotations

import argparse
import shlex

HELP = (
    "Pretrain the quickstart's image encoder without labels (DINO or iBOT) on scenes no split uses; "
    "the result starts `ovseg quickstart --init PATH`."
)
EXAMPLE = (
    "ovseg pretrain-ssl --cfg quickstart/ssl_ibot --output runs/ssl_ibot\n"
    "  ovseg quickstart --init runs/ssl_ibot/encoder.safetensors --output runs/quickstart_ssl"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cfg",
        default="quickstart/ssl_ibot",
        help="preset name or YAML file with an `ssl` section (default: quickstart/ssl_ibot)",
    )
    p.add_argument("--output", help="output folder (default: the config's `output`); an unfinished run there resumes")
    p.add_argument("--device", help="auto, cpu or cuda (default: the config's train.device, auto)")
    p.add_argument("--steps", type=int, help="optimizer steps (ssl.steps)")
    p.add_argument(
        "--opts",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. ssl.batch_size=128 seed=1 (may be given more than once)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engine.ssl import pretrain
    from ..factory import preset_path

    opts = list(args.opts)
    if args.device:
        opts.append(f"train.device={args.device}")
    if args.steps is not None:
        opts.append(f"ssl.steps={args.steps}")
    cfg = load_config(preset_path(args.cfg), opts)
    result = pretrain(cfg, args.output, command=command_line(args), progress=not args.no_progress)
    print(
        f"pretrained {result.steps} steps ({cfg.ssl.method}, {result.minutes:.1f} min): {result.weights} "
        f"(record {result.weights.with_suffix('.json')})"
    )
    print(f"use it: ovseg quickstart --init {result.weights}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command, as the weights record keeps it (the options that change the result)."""
    parts = ["ovseg", "pretrain-ssl", "--cfg", args.cfg]
    for flag, value in (("--output", args.output), ("--device", args.device), ("--steps", args.steps)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts + (["--opts", *args.opts] if args.opts else []))
