"""Time of the evaluation preprocessing (keep-ratio resize to a 448 short side + normalisation) per image:
OpenCV's INTER_LINEAR on the uint8 image (ovseg's, the original's, exact) against a float torch bilinear
resize rounded to uint8 (ovseg's earlier approximation, ±1 grey level on ~12 % of the values).

A random photo-sized uint8 image per size; prints one JSON line per (size, method, threads).

    python benchmarks/bench_preprocess.py --sizes 500x375 1920x1080 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ovseg.images import normalize_0_255
from ovseg.inference.preprocess import keep_ratio_size, prepare_image


def torch_approx(image: np.ndarray) -> torch.Tensor:
    """The approximation: float bilinear (align_corners=False, no antialias), rounded, then normalised."""
    size = keep_ratio_size(image.shape[0], image.shape[1])
    x = torch.tensor(image).permute(2, 0, 1).float().unsqueeze(0)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    return normalize_0_255(x[0]).unsqueeze(0)


def median_ms(fn, image: np.ndarray, repeats: int) -> float:
    fn(image)  # warm-up (cv2's import, torch's kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["500x375", "1920x1080"], help="W x H of the input images")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch and OpenCV thread counts")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    for size in args.sizes:
        width, height = map(int, size.lower().split("x"))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        differ = float((torch_approx(image) != prepare_image(image)).float().mean())
        for threads in args.threads:
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
            for method, fn in (("opencv", prepare_image), ("torch-approx", torch_approx)):
                print(
                    json.dumps(
                        {
                            "size": [width, height],
                            "processed": list(keep_ratio_size(height, width)),
                            "method": method,
                            "threads": threads,
                            "ms_median": round(median_ms(fn, image, args.repeats), 3),
                            "values_differ": round(differ, 4),
                            "opencv": cv2.__version__,
                            "torch": torch.__version__,
                        }
                    )
                )


if __name__ == "__main__":
    main()
