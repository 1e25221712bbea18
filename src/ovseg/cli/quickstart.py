"""ovseg quickstart [--output DIR]"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Learn segmentation from captions on the embedded dataset (both stages, CPU, no downloads), then test."
EXAMPLE = "ovseg quickstart --output runs/quickstart"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--opts", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides for both stages (may be given more than once)")
    p.add_argument("--stage1-only", action="store_true", help="skip stage 2 (the cross-image mask loss)")
    p.add_argument("--shuffle-captions", action="store_true",
                   help="control experiment: pair every image with another image's caption")
    p.add_argument("--overlays", type=int, default=6, help="test images to draw (default 6)")
    p.add_argument("--init", default="scratch", metavar="scratch|ssl|PATH",
                   help="stage 1's image encoder: from scratch, from the packaged self-supervised start (ssl: iBOT "
                        "on scenes no split uses, as the paper starts from DINO; ovseg/weights/quickstart_ssl.json "
                        "says how it was made), or from an encoder.safetensors of `ovseg pretrain-ssl` (default: "
                        "scratch, which scored higher over seeds 0-2: BENCHMARKS.md)")
    p.add_argument("--design", choices=("quickstart", "faithful"), default="quickstart",
                   help="image encoder: the quickstart preset's, or the paper's own (GroupViT grouping, a block "
                        "after it, the 8 segments scored; presets quickstart/faithful_stage*) (default: quickstart)")


def run(args: argparse.Namespace) -> int:
    from ..quickstart import QuickstartOptions, format_table, run_quickstart

    options = QuickstartOptions(Path(args.output), tuple(args.opts), not args.stage1_only, args.shuffle_captions,
                                args.overlays, args.init, args.design)
    report = run_quickstart(options)
    print(format_table(report))
    print(f"\nzero-shot test mIoU {report['miou']:.1f}{harness_note(report)} "
          f"(held-out synonyms {report['miou_synonyms']:.1f}; init {report.get('init', {}).get('name', 'scratch')}), "
          f"{report['seconds'] / 60:.1f} min; report: {Path(args.output) / 'results.json'}, "
          f"{Path(args.output) / 'training.png'}, {Path(args.output) / 'overlays'}/")
    return 0


def harness_note(report: dict) -> str:
    """How the headline figure was scored, with the plainer harnesses' figures beside it."""
    parts = []
    if report.get("scoring", "groups") != "groups":
        parts.append(f"{report['scoring']} scored")
    views = [name for key, name in (("flip", "flip"), ("rotate", "rotation")) if report.get(key)]
    if views:
        parts.append("- and ".join(views) + "-averaged")
    if "miou_unrefined" in report:
        parts.append(f"{report['refine']} refinement; {report['miou_unrefined']:.1f} without")
    if "miou_paper_harness" in report:
        parts.append(f"the paper's harness {report['miou_paper_harness']:.1f}")
    return f" ({', '.join(parts)})" if parts else ""
