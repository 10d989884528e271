"""What run_tests.py's bootstrap (how_sure) adds to grading: its seconds for N graded images.

    python -m lab.how_sure_speed [--images 1000] [--repeats 5]

Times run_tests.how_sure on N per-image IoUs (drawn like a test split's: mean 0.75, spread 0.2)
REPEATS times and prints the median and the worst, beside the benchmark's yardstick step (the
machine's speed at the time).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import run_tests
from lab.benchmark import reference_step_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ious = np.clip(np.random.default_rng(0).normal(0.75, 0.2, args.images), 0, 1)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sure = run_tests.how_sure(ious)
        seconds.append(time.perf_counter() - start)
    print(f"how_sure on {args.images:,} images, {sure['resamples']:,} resamples: median "
          f"{np.median(seconds):.3f} s, worst {max(seconds):.3f} s over {args.repeats} runs; "
          f"yardstick step {reference_step_ms():.0f} ms")
    print(run_tests.how_sure_words(sure, args.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
