"""The default recipe's numbers, pinned: 4 steps of train_model on the bundled examples, and what
tests/test_same_numbers.py compares with tests/same_numbers.json.

    .venv/bin/python -m lab.same_numbers --record      # after a change meant to move numbers
    .venv/bin/python -m lab.same_numbers --compare     # this machine against the record

Two pins. The fingerprint (how far each part of the network moved, and predict's mean
probability for one photo) holds on any CPU within TOLERANCE: CPUs
with other vector units add up in another order, and that moves the last digits, while a moved
default (the learning rate by 0.1%, one more step, another seed) moves the fingerprint by more
(lab/NOTES.md, 2026-12-07). The SHA-256 of the weights and probabilities holds to the last bit,
but only on the machine and torch that recorded it (`machine()`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

import segmentation
from lab.benchmark import machine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "test"
RECORD = ROOT / "tests" / "same_numbers.json"
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2_imagenet.pth"
ENCODERS: Dict[str, Optional[Path]] = {"random-encoder": None, "imagenet-encoder": SHARED_WEIGHTS}
# The default recipe at 128-pixel photos and 96-pixel windows, to be quick; seed 0.
SHORT_RUN = dict(steps=4, image_size=128, crop_size=96)
# The largest relative difference from the record a figure may have. Two other kinds of CPU
# differed from this one by at most 1.3e-4 in an update figure and 2.2e-6 in the probability,
# the learning rate moved by 0.1% by at least 9.3e-4 and 2.7e-5 (lab/NOTES.md, 2026-12-07):
# the tolerance leans towards other CPUs, whose noise was measured on one machine only.
TOLERANCE = {"update": 4e-4, "probability": 1e-5}
PARTS = ("encoder", "decoder", "head")
BATCH_NORM_STATISTICS = ("running_mean", "running_var")


def short_run(encoder_weights: Optional[Path], folder: Path, **changes
              ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], np.ndarray]:
    """SHORT_RUN (with `changes` to its options) on the examples, one thread: the trained
    weights as saved, the weights the run started from, and predict's probabilities for the
    first example photo."""
    options = {**SHORT_RUN, **changes}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # threads would add up in another order from run to run
    try:
        model = segmentation.train_model(EXAMPLES, encoder_weights=encoder_weights,
                                         out_path=folder / "model.pth", verbose=False,
                                         **options)
        photo = sorted((EXAMPLES / "images").glob("*/*.jpg"))[0]
        probabilities = segmentation.predict(model, photo)
    finally:
        torch.set_num_threads(threads)
    torch.manual_seed(options.get("seed", 0))  # the start, as train_model makes it
    start = segmentation.get_model()
    segmentation.load_encoder_weights(start.encoder, encoder_weights)
    trained = torch.load(folder / "model.pth", map_location="cpu")
    return trained, start.state_dict(), probabilities


def digest(trained: Dict[str, torch.Tensor], probabilities: np.ndarray) -> str:
    """SHA-256 of the weights, key by key, and of the probabilities: the last bit counts."""
    sha = hashlib.sha256()
    for key, value in trained.items():
        sha.update(key.encode())
        sha.update(value.numpy().tobytes())
    sha.update(probabilities.tobytes())
    return sha.hexdigest()


def fingerprint(trained: Dict[str, torch.Tensor], start: Dict[str, torch.Tensor],
                probabilities: np.ndarray) -> Dict[str, float]:
    """Figures that a moved default moves and another CPU does not. For the encoder, the
    decoder and the head, the 95th percentile of |weight - its start| over the learned weights:
    Adam's steps are about the learning rate in size, so the rate and the steps scale it, while
    the weights that another CPU's rounding sends another way are those with gradients near
    zero, whose steps are small. And predict's mean probability over the photo: a weight
    whose gradient is near zero barely changes what the network predicts."""
    figures = {}
    for part in PARTS:
        moved = [(value.double() - start[key].double()).abs().flatten()
                 for key, value in trained.items() if key.split(".")[0] == part
                 and value.is_floating_point() and not key.endswith(BATCH_NORM_STATISTICS)]
        figures[f"{part} update q95"] = float(torch.cat(moved).quantile(0.95))
    figures["probability mean"] = float(probabilities.astype(np.float64).mean())
    return figures


def differences(figures: Dict[str, float], recorded: Dict[str, float]) -> Dict[str, float]:
    """Each figure's relative difference from the record."""
    return {key: abs(figures[key] - recorded[key]) / abs(recorded[key]) for key in recorded}


def tolerance(key: str) -> float:
    return TOLERANCE["probability" if key.startswith("probability") else "update"]


def beyond_tolerance(figures: Dict[str, float], recorded: Dict[str, float]) -> List[str]:
    """The figures off the record by more than their tolerance, in words (none: the same)."""
    return [f"{key}: {figures[key]!r}, recorded {recorded[key]!r} ({off:.1e} off, tolerance "
            f"{tolerance(key):.0e})"
            for key, off in differences(figures, recorded).items() if off > tolerance(key)]


def measure(encoders: Dict[str, Optional[Path]] = ENCODERS, **changes) -> Dict[str, dict]:
    """Each encoder's short run here (with `changes`): its fingerprint and digest."""
    runs = {}
    for name, weights in encoders.items():
        with tempfile.TemporaryDirectory() as folder:
            trained, start, probabilities = short_run(weights, Path(folder), **changes)
        runs[name] = {"fingerprint": fingerprint(trained, start, probabilities),
                      "digest": digest(trained, probabilities)}
    return runs


def record() -> dict:
    """Every encoder's short run here: the record tests/same_numbers.json holds."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    return {"recorded_at": f"commit {commit}", "machine": machine(), "short_run": SHORT_RUN,
            "runs": measure()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--record", action="store_true", help=f"write {RECORD.name}")
    action.add_argument("--compare", action="store_true",
                        help="print how far this machine's figures are from the record")
    args = parser.parse_args(argv)
    if not SHARED_WEIGHTS.exists():
        parser.error(f"needs the offline ImageNet weights at {SHARED_WEIGHTS}")
    made = record()
    if args.record:
        RECORD.write_text(json.dumps(made, indent=1) + "\n")
        print(RECORD.read_text())
        return 0
    recorded = json.loads(RECORD.read_text())
    print(json.dumps({"here": made["machine"], "recorded": recorded["machine"]}, indent=1))
    for name, run in made["runs"].items():
        off = differences(run["fingerprint"], recorded["runs"][name]["fingerprint"])
        worst = max(off, key=off.get)
        same = run["digest"] == recorded["runs"][name]["digest"]
        print(f"{name}: largest difference {off[worst]:.1e} ({worst}); "
              f"digest {'the same' if same else 'differs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
