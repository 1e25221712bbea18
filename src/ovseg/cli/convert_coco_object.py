"""ovseg convert-coco-object SRC DST"""

from __future__ import annotations

import argparse

HELP = ("Make COCO-Object labels (<name>_instanceTrainIds.png: things 1-80, stuff and unlabelled 0) from "
        "COCO-Stuff-164k label maps, as GroupViT's converter does.")
EXAMPLE = ("ovseg convert-coco-object data/coco_stuff164k/annotations/val2017 "
           "data/coco/annotations/val2017_cocoobject")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="?", help="folder of COCO-Stuff-164k label maps (stuffthingmaps *.png)")
    p.add_argument("dst", help="output folder")
    p.add_argument("--workers", type=int, help="processes (default: up to 8)")
    p.add_argument("--stuff", action="store_true",
                   help="write mmseg's COCO-Stuff-171 labels (<name>_labelTrainIds.png) instead")
    p.add_argument("--instances", metavar="JSON",
                   help="draw the labels from instances_val2017.json instead of SRC (needs pycocotools)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..errors import OvsegError
    from ..evaluation import convert_coco_object, convert_from_instances

    if args.instances:
        report = convert_from_instances(args.instances, args.dst, progress=not args.no_progress)
    elif args.src is None:
        raise OvsegError("give SRC (COCO-Stuff label maps) or --instances JSON")
    else:
        report = convert_coco_object(args.src, args.dst, workers=args.workers, stuff=args.stuff,
                                     progress=not args.no_progress)
    print(f"wrote {report.written} label maps to {report.output_dir}")
    if report.unknown:
        print(f"note: {len(report.unknown_files)} maps held unknown ids {sorted(report.unknown)}, written as 255")
    return 0
