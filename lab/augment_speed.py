"""Time the batched augmentation against the per-image one it replaced, beside the yardstick.

    python -m lab.augment_speed --train ../shared/data/public_data/train --old a185465 \
        --out lab/results/augment-on-device

Loads the training folder once, then alternates rounds of: the fixed yardstick (a training step
of torchvision's MobileNetV2 classifier, see benchmark.py), the old code's augmented batch and
training step (segmentation.py as of commit --old, from git), and this code's, timed in
turns, step by step. Both train the
default recipe's model on 16 windows of 224. Writes <out>/augment_speed.{json,md}; all times
are medians in ms, and the ratios to the yardstick are what compares across machines and days.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import segmentation
from lab.benchmark import reference_step_ms

ROOT = Path(__file__).resolve().parent.parent


def module_at(commit: str, folder: Path):
    """segmentation.py as of `commit`, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:segmentation.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / f"segmentation_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_timer(module, data, step_kwargs):
    """(augment-only ms, augment + train step ms) functions for `module`'s code on `data`."""
    torch.manual_seed(0)
    model = module.get_model().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator).tolist()
    position = [0]

    def batch():
        start = position[0] % (len(order) - 16)
        position[0] += 16
        return data.batch(order[start:start + 16], generator, augment=True, crop_size=224)

    def step():
        images, masks = batch()
        module.train_step(model, optimizer, images.contiguous(memory_format=torch.channels_last),
                          masks, *step_kwargs)
    return batch, step


def interleaved_ms(functions: dict, repeats: int, warmup: int = 2) -> dict:
    """{name: median ms} of each function, timed in turns (A B, then B A, ...) so that the
    machine's drift, which is large here, falls on all of them alike."""
    times: dict = {name: [] for name in functions}
    names = list(functions)
    for i in range(warmup + repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            functions[name]()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(values)) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--old", required=True, help="the commit whose augmentation is compared")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per code and round")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = segmentation.SegmentationData(args.train)
    with tempfile.TemporaryDirectory() as tmp:
        old = module_at(args.old, Path(tmp))
        old_data = old.SegmentationData.__new__(old.SegmentationData)
        old_data.pairs, old_data.images, old_data.masks = data.pairs, data.images, data.masks
        codes = {"old": step_timer(old, old_data, (False,)),
                 "new": step_timer(segmentation, data, ("fp32", None))}
        rounds = []
        for index in range(args.rounds):
            record = {"yardstick_ms": reference_step_ms()}
            augment = interleaved_ms({name: code[0] for name, code in codes.items()},
                                     3 * args.steps)
            steps = interleaved_ms({name: code[1] for name, code in codes.items()}, args.steps)
            for name in codes:
                record[f"{name}_augment_ms"], record[f"{name}_step_ms"] = augment[name], steps[name]
            rounds.append(record)
            print(json.dumps(record), flush=True)
    summary = {key: float(np.mean([r[key] for r in rounds])) for key in rounds[0]}
    for name in codes:
        summary[f"{name}_step_per_yardstick"] = summary[f"{name}_step_ms"] / summary["yardstick_ms"]
    result = {"command": " ".join(sys.argv), "old_commit": args.old, "images": len(data),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "rounds": rounds,
              "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "augment_speed.json").write_text(json.dumps(result, indent=1))
    lines = ["# Batched augmentation on the training device vs the per-image one (CPU)", "",
             f"`{result['command']}`; torch {torch.__version__}, {result['threads']} threads; "
             f"medians in ms, {args.rounds} alternating rounds.", "",
             "| round | yardstick | old: augment | new: augment | old: step | new: step |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['yardstick_ms']:.0f} | {r['old_augment_ms']:.0f} | "
                     f"{r['new_augment_ms']:.0f} | {r['old_step_ms']:.0f} | "
                     f"{r['new_step_ms']:.0f} |")
    lines += ["", f"Per yardstick step: old {summary['old_step_per_yardstick']:.3f}, new "
              f"{summary['new_step_per_yardstick']:.3f} (new / old = "
              f"{summary['new_step_ms'] / summary['old_step_ms']:.3f}); augmentation alone: "
              f"{summary['new_augment_ms'] / summary['old_augment_ms']:.2f}x the old time.", ""]
    (args.out / "augment_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
