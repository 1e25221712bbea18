"""ovseg eval --dataset NAME --data-root DIR --resume CKPT"""

from __future__ import annotations

import argparse

from .common import resolve_device

HELP = ("Zero-shot mIoU on a benchmark (voc, context, coco_object, ade20k; voc20, context59, coco_stuff, "
        "cityscapes) with the paper's harness.")
EXAMPLE = "ovseg eval --dataset voc --data-root data/VOCdevkit/VOC2012 --resume ovsegmentor.pth --output out/voc"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="benchmark name or alias (pc59, coco, ade …); default: the config's")
    p.add_argument("--data-root", help="the benchmark's folder (default: evaluate.seg.data_root, else "
                   "$OVSEG_DATA or ./data plus the usual sub-folder)")
    p.add_argument("--resume", "--checkpoint", dest="resume", required=True, help="ovseg or official checkpoint")
    p.add_argument("--cfg", help="test config (default: the dataset's configs/test_*.yml)")
    p.add_argument("--opts", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. evaluate.seg.bg_thresh=0.9 evaluate.seg.template=full "
                   "(may be given more than once)")
    p.add_argument("--output", help="folder for results.json")
    p.add_argument("--limit", type=int, help="evaluate only the first N images (a quick look)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--refine", choices=("none", "pamr"),
                   help="pamr: refine the class maps along colour edges (TCL's test-time step; default none)")
    p.add_argument("--scoring", choices=("groups", "patches"),
                   help="patches: score every patch as a one-patch segment of its group (models with depths "
                   "[d, 0], e.g. the quickstart's; default groups, the paper's)")
    p.add_argument("--flip", action="store_true",
                   help="also segment every window mirrored left-right and average (flip test-time augmentation)")
    p.add_argument("--precision", choices=("fp32", "bf16-matmul", "bf16"),
                   help="image-encoder precision (default fp32, exact; bf16-matmul: faster, BENCHMARKS.md)")
    p.add_argument("--batch-crops", type=int, help="windows per forward pass, across images (default 8)")
    p.add_argument("--workers", type=int, help="image-loading processes (default: up to 4)")
    p.add_argument("--invalid-labels", choices=("mmseg", "ignore", "error"), default="mmseg",
                   help="ground truth outside the class range: count as mmseg does, ignore, or stop "
                   "(always reported)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, load_eval_config
    from ..inference import Segmenter

    opts = list(args.opts) + ([f"evaluate.seg.batch_crops={args.batch_crops}"] if args.batch_crops else [])
    opts += [f"evaluate.seg.precision={args.precision}"] if args.precision else []
    opts += [f"evaluate.seg.refine={args.refine}"] if args.refine else []
    opts += [f"evaluate.seg.scoring={args.scoring}"] if args.scoring else []
    opts += ["evaluate.seg.flip=true"] if args.flip else []
    cfg = load_eval_config(args.dataset, args.cfg, opts)
    device = resolve_device(args.device)
    seg = Segmenter.from_checkpoint(args.resume, device=device, seg_cfg=cfg.evaluate.seg,
                                    opts=[o for o in opts if o.startswith("model.")])
    result = evaluate(seg, data_root=args.data_root, limit=args.limit, output_dir=args.output,
                      invalid=args.invalid_labels, num_workers=args.workers, progress=not args.no_progress,
                      extra_settings={"checkpoint": str(args.resume), "config": str(args.cfg or ""), "opts": opts})
    print(result.table())
    if result.invalid_labels["pixels"]:
        print(f"note: {result.invalid_labels['pixels']} ground-truth pixels outside the class range "
              f"(values {result.invalid_labels['values'][:10]}); see the warning above")
    return 0
