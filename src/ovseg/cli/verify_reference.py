"""ovseg verify-reference DIR"""

from __future__ import annotations

import argparse

HELP = "Recompute a reference folder's outputs (original OVSegmentor on fixed inputs) and compare."
EXAMPLE = "ovseg verify-reference tests/data/reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder with config.json, manifest.json, weights.safetensors, io.safetensors")
    p.add_argument("--failures-only", action="store_true", help="print only the rows that are not ok")
    p.add_argument("--device", default="cpu", help="compute on this device (cpu, cuda); compared on the CPU")


def run(args: argparse.Namespace) -> int:
    from ..verify import format_table, verify_reference

    rows = verify_reference(args.folder, args.device)
    shown = [r for r in rows if r.status != "ok"] if args.failures_only else rows
    if shown:
        print(format_table(shown))
    failed = [r for r in rows if r.status in ("FAIL", "missing")]
    print("verify-reference:", "FAILED" if failed else "all outputs match", f"({len(rows)} entries)")
    return 1 if failed else 0
