"""Compare recipe choices on a validation block carved from the training split (never the test split).

    python bench/validate.py NAME --train ../shared/data/public_data/train [--set key=value ...]

Trains with train_model's defaults overridden by --set (any train_model/fit keyword, e.g.
encoder_lr_scale=0.3 or crop_size=192) on all but the last 15% of each training class, then
scores the held-out 15% the grader's way (full-resolution masks, threshold 0.5, IoU per image),
with predict() at each --predict-sizes size. The model is kept as NAME.pth for later sweeps.
Writes bench/results/validation/NAME.json; the README's results section collects them.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import segmentation as seg  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--train", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--predict-sizes", type=int, nargs="*", default=None,
                        help="score predict() at each of these sizes (default: image_size)")
    parser.add_argument("--out", default="bench/results/validation")
    args = parser.parse_args()
    options = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.set)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    model = seg.train_model(args.train, val_fraction=args.val_fraction, out_path=None,
                            history_path=out / f"{args.name}.history.json", **options)
    minutes = (time.time() - start) / 60
    seg.save_atomic(seg.clean_state_dict(model), out / f"{args.name}.pth")  # for later sweeps
    pairs = seg.find_pairs(args.train)
    val_pairs = [pairs[i] for i in seg.split_indices(pairs, args.val_fraction)[1]]
    sizes = args.predict_sizes or [options.get("image_size", seg.IMAGE_SIZE)]
    record = {"name": args.name, "options": options, "train_minutes": minutes}
    for size in sizes:
        scores = score(model, val_pairs, size)
        record[f"predict_{size}"] = scores
        print(size, json.dumps(scores), flush=True)
    record.update(record[f"predict_{sizes[0]}"])
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return 0


def score(model, val_pairs, size: int) -> dict:
    """The grader's mean per-image IoU on `val_pairs` with predict() at `size`, and by source."""
    per_class: dict = {}
    for image_path, mask_path, cls in val_pairs:
        pred = seg.predict(model, image_path, image_size=size) > 0.5
        per_class.setdefault(cls, []).append(seg.iou_score(pred, seg.read_mask(mask_path)))
    ious = [v for values in per_class.values() for v in values]
    groups = {g: float(np.mean([v for c, vs in per_class.items() if c.startswith(g) for v in vs]))
              for g in sorted({c.split(".")[0] for c in per_class})}
    return {"val_iou": float(np.mean(ious)), "val_images": len(ious), "by_source": groups,
            "per_class": {c: float(np.mean(v)) for c, v in sorted(per_class.items())}}


if __name__ == "__main__":
    sys.exit(main())
