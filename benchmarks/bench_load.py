"""Time ``ovseg.load_model`` on one checkpoint (the trust boundary's checks included).

    python benchmarks/bench_load.py model.safetensors --repeats 3

The first load also pays for imports and the page cache; the median of the others is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ovseg import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        load_model(args.checkpoint)
        seconds.append(time.perf_counter() - start)
    warm = seconds[1:] or seconds
    print(f"load_model: median {statistics.median(warm):.2f} s of warm loads; all: "
          + ", ".join(f"{s:.2f}" for s in seconds))


if __name__ == "__main__":
    main()
