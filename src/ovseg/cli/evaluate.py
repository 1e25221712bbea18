"""ovseg eval --dataset NAME --data-root DIR --resume CKPT
ovseg eval --task cls --data-root DIR|CSV --classes imagenet|FILE --resume CKPT"""

from __future__ import annotations

import argparse
from typing import get_args

from ..config import InferencePrecision, Refinement
from ..errors import OvsegError
from .common import resolve_device

SEG_ONLY = ("dataset", "refine", "scoring", "flip", "precision", "batch_crops", "save_predictions", "save_overlays")

HELP = ("Zero-shot mIoU on a benchmark (voc, context, coco_object, ade20k; voc20, context59, coco_stuff, "
        "cityscapes) with the paper's harness; --task cls: zero-shot top-1 / top-5 classification.")
EXAMPLE = "ovseg eval --dataset voc --data-root data/VOCdevkit/VOC2012 --resume ovsegmentor.pth --output out/voc"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("seg", "cls"), default="seg",
                   help="seg: segmentation mIoU (default); cls: zero-shot classification of labelled images "
                   "(--data-root a folder of class sub-folders or an image,label CSV)")
    p.add_argument("--classes", help="--task cls: 'imagenet' (default, the 1000 names shipped) or a file of class "
                   "names, one per line or a JSON list")
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
    p.add_argument("--refine", choices=get_args(Refinement),
                   help="refine the class maps along colour edges: pamr (TCL's PAMR) or pamr-local (ovseg's "
                   "variant, the quickstart's); default none")
    p.add_argument("--scoring", choices=("groups", "patches"),
                   help="patches: score every patch as a one-patch segment of its group (models with depths "
                   "[d, 0], e.g. the quickstart's; default groups, the paper's)")
    p.add_argument("--flip", action="store_true",
                   help="also segment every window mirrored left-right and average (flip test-time augmentation)")
    p.add_argument("--precision", choices=get_args(InferencePrecision),
                   help="image-encoder precision (default auto: the fastest path whose labels equal fp32's on "
                   "BENCHMARKS.md's photos; fp32: the original's arithmetic; bf16-matmul, bf16: faster, inexact)")
    p.add_argument("--batch-crops", type=int, help="windows per forward pass, across images (default 8)")
    p.add_argument("--workers", type=int, help="image-loading processes (default: up to 4)")
    p.add_argument("--invalid-labels", choices=("mmseg", "ignore", "error"), default="mmseg",
                   help="ground truth outside the class range: count as mmseg does, ignore, or stop "
                   "(always reported)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--save-predictions", metavar="DIR", help="write each prediction as a paletted PNG named by the "
                   "image's id (pixel = class index), plus classes.json; never inside the dataset folder")
    p.add_argument("--save-overlays", metavar="DIR",
                   help="write side-by-side pictures (photo | ground truth | prediction) of the first images")
    p.add_argument("--overlay-count", type=int, default=8, metavar="N", help="images drawn by --save-overlays")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, load_eval_config
    from ..inference import Segmenter

    if args.task == "cls":
        return _run_classification(args)
    if args.classes is not None:
        raise OvsegError("--classes is for --task cls (segmentation takes the benchmark's classes)")
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
                      extra_settings={"checkpoint": str(args.resume), "config": str(args.cfg or ""), "opts": opts},
                      save=_save_options(args))
    print(result.table())
    if result.invalid_labels["pixels"]:
        print(f"note: {result.invalid_labels['pixels']} ground-truth pixels outside the class range "
              f"(values {result.invalid_labels['values'][:10]}); see the warning above")
    return 0


def _save_options(args: argparse.Namespace):
    """What --save-predictions / --save-overlays ask for (None: nothing to save)."""
    from ..evaluation.saving import SaveOptions

    if args.save_predictions is None and args.save_overlays is None:
        return None
    return SaveOptions(args.save_predictions, args.save_overlays, args.overlay_count)


def _run_classification(args: argparse.Namespace) -> int:
    """--task cls: the checkpoint's model, the config's ``evaluate.cls`` with the flags on top, results.json."""
    from ..checkpoints import load_model
    from ..config import load_config
    from ..evaluation import evaluate_classification, read_labelled_images

    given = [f"--{name.replace('_', '-')}" for name in SEG_ONLY if getattr(args, name) not in (None, False)]
    if given:
        raise OvsegError(f"{', '.join(given)}: segmentation options, not used by --task cls")
    model_opts = [o for o in args.opts if o.startswith("model.")]
    cfg = load_config(args.cfg, [o for o in args.opts if not o.startswith("model.")])
    cls_cfg = cfg.evaluate.cls
    cls_cfg.data_root = args.data_root or cls_cfg.data_root
    cls_cfg.classes = args.classes or cls_cfg.classes
    cls_cfg.max_images = args.limit if args.limit is not None else cls_cfg.max_images
    if not cls_cfg.data_root:
        raise OvsegError("--task cls needs --data-root (a folder of class sub-folders or an image,label CSV)")
    images = read_labelled_images(cls_cfg)  # a wrong folder, CSV or class list fails before the model loads
    device = resolve_device(args.device)
    model, _ = load_model(args.resume, device=device, opts=model_opts)
    result = evaluate_classification(model, cls_cfg, device, progress=not args.no_progress, shard=False,
                                     num_workers=args.workers, images=images)
    result.settings.update(checkpoint=str(args.resume), config=str(args.cfg or ""), opts=list(args.opts))
    if args.output:
        result.write(args.output)
    print(result.summary())
    return 0
