"""ovseg prepare --input CORPUS --output DIR"""

from __future__ import annotations

import argparse

HELP = ("Turn a caption corpus (webdataset shards, a CSV metafile + images, or a folder of images with .txt "
        "captions) into training shards with entities and a cross-image pair index; resumable.")
EXAMPLE = "ovseg prepare --input 'cc12m/{00000..01242}.tar' --output data/cc12m-ovseg --workers 16"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, nargs="+", help="shards (a folder of .tar, .tar files, a quoted brace "
                   "pattern), a .csv/.tsv metafile (columns image_id, caption) or a folder of images with same-name "
                   ".txt captions")
    p.add_argument("--output", required=True, help="output folder (rerun with the same options to resume)")
    p.add_argument("--image-root", help="folder the metafile's image_id paths are relative to "
                   "(default: the metafile's folder)")
    p.add_argument("--shard-size", type=int, default=10_000, help="input rows per output shard (CSV, folder)")
    p.add_argument("--pairs", type=int, default=10, help="partners stored per sample for stage 2 (default 10)")
    p.add_argument("--workers", type=int, help="processes (default: up to 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair index")
    p.add_argument("--vocabulary", help="entity vocabulary JSON (default: the paper's 100 words / 73 entities)")
    p.add_argument("--legacy-entity-strip", action="store_true",
                   help="match entities with the original's strip(\"'s\") bug (re-training the released model)")
    p.add_argument("--require-entity", action="store_true",
                   help="drop captions without any entity (the paper's CC12M -> 'CC4M' filter)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare

    report = prepare("::".join(args.input), args.output, image_root=args.image_root, shard_size=args.shard_size,
                     pairs=args.pairs, seed=args.seed, vocabulary=args.vocabulary,
                     legacy_entity_strip=args.legacy_entity_strip, require_entity=args.require_entity,
                     workers=args.workers, progress=not args.no_progress)
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items())) or "none"
    print(f"prepared {report.samples} samples in {report.shards} shards under {report.output} "
          f"({report.resumed} shards kept from an earlier run; skipped: {skipped}"
          + (f"; without entity, dropped: {report.filtered}" if report.filtered else "") + ")")
    print(f"train with: --opts data.type=webdataset data.shards={report.output}")
    return 0
