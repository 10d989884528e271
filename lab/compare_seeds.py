"""Pool lab/compare.py's runs over seeds: per model its mean, worst and spread, and the skips'
gain (U-Net minus encoder-decoder, the same seed, sample and budget) seed by seed.

    python -m lab.compare_seeds lab/results/parts12-birds/seed*/results.json [--write OUT.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List

import numpy as np

BASELINES = ("all background", "all object")


def table(runs: List[dict]) -> str:
    """Markdown: a row per trained model over the runs' seeds, then the skips' gain per seed."""
    runs = sorted(runs, key=lambda run: run["seed"])
    seeds = ", ".join(str(run["seed"]) for run in runs)
    models = [name for name in runs[0]["rows"] if name not in BASELINES
              and all(name in run["rows"] and "steps" in run["rows"][name] for run in runs)]
    lines = [f"Seeds {seeds}; {runs[0]['sample']} of `{runs[0]['class']}`, "
             f"{runs[0]['budget_s']:.0f} s of training per model; graded on its test photos.",
             "", "| model | IoU: mean | worst | spread | per seed | steps (mean) |",
             "|---|---|---|---|---|---|"]
    for name in models:
        ious = np.array([run["rows"][name]["iou"] for run in runs])
        steps = np.mean([run["rows"][name]["steps"] for run in runs])
        lines.append(f"| {name} | {ious.mean():.4f} | {ious.min():.4f} | "
                     f"{ious.max() - ious.min():.4f} | "
                     f"{', '.join(format(v, '.4f') for v in ious)} | {steps:,.0f} |")
    if {"U-Net", "encoder-decoder"} <= set(models):
        gains = np.array([run["rows"]["U-Net"]["iou"] - run["rows"]["encoder-decoder"]["iou"]
                          for run in runs])
        lines += ["", f"The skips' gain (U-Net minus encoder-decoder), seed by seed: "
                  f"{', '.join(format(v, '+.4f') for v in gains)}; mean {gains.mean():+.4f}, "
                  f"from {gains.min():+.4f} to {gains.max():+.4f}."]
    yardsticks = [run.get("yardstick_step_ms") for run in runs]
    if all(yardsticks):
        lines += ["", "Yardstick step (the machine's speed) per seed: "
                  + ", ".join(f"{y:.0f} ms" for y in yardsticks) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="compare.py's results.json files")
    parser.add_argument("--write", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.records]
    if len({(run["class"], run["sample"], run["budget_s"]) for run in runs}) > 1:
        parser.error("the runs differ in class, sample or budget: pool like with like")
    text = table(runs)
    print(text, end="")
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
