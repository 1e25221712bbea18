"""Time of the harness's work after the image encoder for one image: group maps (bilinear upsample +
argmax over groups), window averaging of the group→class tables, resize to the input size and argmax.

Random soft assignments and tables of the given shapes, so no model is needed; prints one JSON line.
Compare two commits by running it with ``PYTHONPATH=<other checkout>/src``.

    python benchmarks/bench_postprocess.py --height 375 --width 500 --groups 8 --classes 21
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ovseg.inference.preprocess import keep_ratio_size
from ovseg.inference.slide import (
    ImageEncoding,
    average_window_logits,
    group_maps_from_soft,
    labels_and_scores,
    slide_boxes,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    size = keep_ratio_size(args.height, args.width, 448, 2048, 16)
    boxes = slide_boxes(*size, 448, 224)
    torch.manual_seed(0)
    soft = torch.rand(len(boxes), 1, args.groups, 28 * 28).softmax(2)
    tables = torch.rand(len(boxes), args.groups, args.classes)
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        maps = group_maps_from_soft(soft, (28, 28), (448, 448))
        enc = ImageEncoding(size=size, boxes=boxes, grid=(28, 28), soft=soft, group_maps=maps,
                            group_emb=torch.zeros(len(boxes), args.groups, 1), image_emb=torch.zeros(len(boxes), 1))
        logits, _ = average_window_logits(enc, tables)
        labels, _ = labels_and_scores(logits, (args.height, args.width))
        times.append(time.perf_counter() - start)
    print(json.dumps({"size": [args.height, args.width], "processed": list(size), "windows": len(boxes),
                      "groups": args.groups, "classes": args.classes, "threads": torch.get_num_threads(),
                      "ms_median": statistics.median(times[1:]) * 1000,
                      "labels_sum": int(labels.sum()), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
