"""Re-score a quickstart checkpoint under other harness settings, as the quickstart scores it.

For every combination of ``--scoring``, ``--refine`` and ``--top-k`` the background threshold is chosen on the
validation split among ``--thresholds``, then the test split is scored with it. One JSON line each:

    python benchmarks/quickstart_rescore.py runs/quickstart/stage2/best_miou.safetensors \\
        --scoring groups patches --refine none pamr pamr-local
"""

from __future__ import annotations

import argparse
import json
import time

from omegaconf import OmegaConf

from ovseg.checkpoints import load_model
from ovseg.quickstart import run_config, validated_test_miou


def rescore(checkpoint: str, scoring: str, refine: str, thresholds: list[float], top_k: int | None = None,
            flip: bool | None = None, rotate: bool | None = None) -> dict:
    model, _ = load_model(checkpoint)
    cfg = run_config(checkpoint)
    seg = OmegaConf.merge(cfg.evaluate.seg, {"scoring": scoring, "refine": refine})
    seg.top_k = top_k or seg.top_k
    seg.flip = seg.flip if flip is None else flip
    seg.rotate = seg.rotate if rotate is None else rotate
    start = time.perf_counter()
    test, best, val = validated_test_miou(model, cfg, seg, thresholds)
    return {"checkpoint": checkpoint, "scoring": scoring, "refine": refine, "top_k": seg.top_k, "flip": seg.flip,
            "rotate": seg.rotate,
            "val_miou": {str(t): round(v, 2) for t, v in val.items()}, "bg_thresh": best,
            "test_miou": round(test, 2), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--scoring", nargs="+", choices=["groups", "patches"], default=["groups", "patches"])
    p.add_argument("--refine", nargs="+", choices=["none", "pamr", "pamr-local"], default=["none", "pamr-local"])
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--top-k", type=int, nargs="+", default=[None], help="default: the checkpoint's")
    p.add_argument("--flip", choices=["on", "off"], help="default: the checkpoint's")
    p.add_argument("--rotate", choices=["on", "off"], help="default: the checkpoint's")
    args = p.parse_args()
    for scoring in args.scoring:
        for refine in args.refine:
            for top_k in args.top_k:
                flip = None if args.flip is None else args.flip == "on"
                rotate = None if args.rotate is None else args.rotate == "on"
                print(json.dumps(rescore(args.checkpoint, scoring, refine, args.thresholds, top_k, flip, rotate)),
                      flush=True)


if __name__ == "__main__":
    main()
