"""Train on one class of the training split alone, as a student's bird-only folder, and grade on
the same class of the test split the grader's way.

    OMP_NUM_THREADS=1 python -m lab.birds D0-600pairs-seed0 --data ../shared/data/public_data \
        [--class cub.bird] [--pairs N] [--set seed=0 min_crop_area=0.2 ...]

The training folder is a tree of links to the class's pairs (never a copy of the photos); with
--pairs N it holds N of them, evenly spaced in name order (the same subset every time).
train_model runs with its defaults overridden by --set and saves `<out>/models/NAME.pth` with
its training record beside it, as a student's run does, and its per-pass history
(NAME.history.json, for curves). The test photos of the class are graded as the course's grader
does (predict > 0.5 against gt > 127, IoU per image, averaged), with the share of the bird
missed and of the background painted, and the IoU of the smaller and the larger half of the
birds. The machine's speed is timed first with benchmark.py's yardstick. Writes
`<out>/NAME.json` (the per-image IoUs included); lab/birds_summary.py pools the records.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import segmentation as seg
from lab.benchmark import machine, parse_setting, reference_step_ms
from lab.validate import evenly_per_class, linked_pairs


def grade(model, pairs: list, image_size: int = seg.IMAGE_SIZE) -> dict:
    """The grader's mean IoU over `pairs`, with per-image figures and what the errors are.

    `image_size` is the photo size predict squashes to: a run trained at another size is
    graded at its own (a recipe that adopted it would change `IMAGE_SIZE`, the grader's default).
    """
    images, missed, painted, bird, background = [], 0, 0, 0, 0
    for image_path, mask_path, _ in pairs:
        pred = seg.predict(model, image_path, image_size=image_size) > 0.5
        truth = seg.read_mask(mask_path)
        missed += int((truth & ~pred).sum())
        painted += int((pred & ~truth).sum())
        bird += int(truth.sum())
        background += int((~truth).sum())
        images.append({"name": image_path.stem, "iou": seg.iou_score(pred, truth),
                       "area": float(truth.mean())})
    ious = np.array([i["iou"] for i in images])
    order = np.argsort([i["area"] for i in images], kind="stable")
    small, large = order[:len(order) // 2], order[len(order) // 2:]
    return {"iou": float(ious.mean()), "images": len(images),
            "worst_image": float(ious.min()),
            "missed_share": missed / max(bird, 1), "painted_share": painted / max(bird, 1),
            "painted_of_background": painted / max(background, 1),
            "smaller_half_iou": float(ious[small].mean()),
            "larger_half_iou": float(ious[large].mean()), "per_image": images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--data", required=True, help="a folder with train/ and test/")
    parser.add_argument("--class", dest="cls", default="cub.bird")
    parser.add_argument("--pairs", type=int, default=None, metavar="N",
                        help="train on N of the class's pairs, evenly spaced (default: all)")
    parser.add_argument("--set", nargs="*", type=parse_setting, default=[], metavar="KEY=VALUE",
                        help="train_model options over the defaults (text needs no quotes)")
    parser.add_argument("--out", default="lab/results/birds")
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    if (out / f"{args.name}.json").exists():
        parser.error(f"{out / args.name}.json exists: a run's record is never overwritten; "
                     "give the run another NAME")
    train = [p for p in seg.find_pairs(data / "train") if p[2] == args.cls]
    test = [p for p in seg.find_pairs(data / "test") if p[2] == args.cls]
    if not train or not test:
        parser.error(f"{args.cls}: {len(train)} training and {len(test)} test pairs in {data}")
    if args.pairs:
        train = evenly_per_class(train, args.pairs)
    yardstick = reference_step_ms()
    print(f"yardstick step: {yardstick:.0f} ms", flush=True)
    checkpoint, options = out / "models" / f"{args.name}.pth", dict(args.set)
    with tempfile.TemporaryDirectory() as folder:
        root = linked_pairs(data / "train", train, Path(folder) / "train")
        start = time.time()
        model = seg.train_model(root, out_path=checkpoint, **options,
                                history_path=checkpoint.with_suffix(".history.json"))
        minutes = (time.time() - start) / 60
    record = json.loads(seg.record_path(checkpoint).read_text())
    predict_size = options.get("image_size", seg.IMAGE_SIZE)
    result = {"name": args.name, "command": "python -m lab.birds " + shlex.join(sys.argv[1:]),
              "class": args.cls, "options": options,
              "train_pairs": len(train), "steps": record["steps"], "train_minutes": minutes,
              "yardstick_step_ms": yardstick, "torch": record["torch"], "machine": machine(),
              "device": record["device"],
              "predict_size": predict_size, "test": grade(model, test, predict_size)}
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result["test"].items() if k != "per_image"}
    print(json.dumps({**result, "test": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
