"""Seed-compatible entry point of the original ``main_seg.py``: the same code as ``ovseg eval``.

    python -m main_seg --cfg configs/test_voc12.yml --resume CKPT [--opts k=v ...] [--output DIR]
                       [--data-root DIR] [--tag TAG]

The dataset and harness settings come from the config; results go to ``--output`` (default
``output/<config name>[/<tag>]``) as results.json. ``--local_rank`` is accepted and ignored (one process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser("main_seg", description="Zero-shot segmentation evaluation (OVSegmentor harness)")
    p.add_argument("--cfg", required=True, help="test config, e.g. configs/test_voc12.yml")
    p.add_argument("--resume", required=True, help="checkpoint (official .pth or ovseg .safetensors)")
    p.add_argument("--opts", nargs="+", action="extend", default=[],
                   help="KEY=VALUE config overrides (may be given more than once)")
    p.add_argument("--output", help="output folder (default output/<config name>[/<tag>])")
    p.add_argument("--tag", help="sub-folder of the output")
    p.add_argument("--data-root", help="benchmark folder (default: evaluate.seg.data_root or ./data/…)")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--vis", nargs="+", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def to_eval_argv(args: argparse.Namespace) -> list[str]:
    """The equivalent ``ovseg eval`` command line."""
    output = args.output or str(Path("output") / Path(args.cfg).stem)
    if args.tag:
        output = str(Path(output) / args.tag)
    argv = ["eval", "--cfg", args.cfg, "--resume", args.resume, "--output", output]
    for flag, value in (("--data-root", args.data_root), ("--limit", args.limit), ("--device", args.device)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--opts", *args.opts] if args.opts else [])


def main(argv: list[str] | None = None) -> int:
    from ovseg.cli import main as ovseg_main

    args = parse_args(argv)
    if args.vis:
        print("main_seg: --vis is not supported here; use `ovseg demo` for visualisations", file=sys.stderr)
        return 2
    return ovseg_main(to_eval_argv(args))


if __name__ == "__main__":
    sys.exit(main())
