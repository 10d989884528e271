"""Inference-only choices, scored on the validation block of a model trained by validate.py.

    python -m lab.sweep_predict lab/results/validation/NAME.pth \
        --train ../shared/data/public_data/train

For one trained model, compares what predict() could do without retraining: squash the image
to a square (as now) or resize it keeping its aspect ratio to about the same number of pixels;
averaging other views than the image and its mirror (--views: 256+320 averages two sizes,
256+320f adds the mirror image at 320); the threshold the probabilities would need (the
grader's is fixed at 0.5, so another one would have to be folded into the probabilities); and
dropping connected components smaller than a fraction of the largest one. Scores are the
grader's mean per-image IoU on the held-out 15%. Writes --out (predict-sweep.json by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import label

import segmentation as seg
from tools.checkpoint import load_model

THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
COMPONENT_FRACTIONS = (0.0, 0.1, 0.3, 1.0)  # 1.0 keeps the largest component only


def parse_views(spec: str) -> List[Tuple[int, bool]]:
    """'256+320f' -> [(256, False), (320, False), (320, True)]: sizes, "f" adding the mirror."""
    views = []
    for part in spec.split("+"):
        side = int(part.rstrip("f"))
        views += [(side, False), (side, True)] if part.endswith("f") else [(side, False)]
    return views


def probability(model, path: Path, views: Sequence[Tuple[int, bool]], keep_aspect: bool
                ) -> np.ndarray:
    """Probabilities from the logits averaged over `views` (side, mirrored), predict()'s being
    [(288, False), (288, True)]. Each view resizes the image to side x side or, with
    `keep_aspect`, to about side^2 pixels in its own proportions (sides multiples of 32)."""
    image = seg.to_rgb(Image.open(path))
    width, height = image.size
    total = torch.zeros(1, 1, height, width)
    inputs: Dict[int, torch.Tensor] = {}  # a size and its mirror share one resize
    for side, mirrored in views:
        if side not in inputs:
            if keep_aspect:
                scale = side / (width * height) ** 0.5
                size = (max(32, round(width * scale / 32) * 32),
                        max(32, round(height * scale / 32) * 32))
            else:
                size = (side, side)
            x = torch.from_numpy(np.array(image.resize(size, Image.BILINEAR))).permute(2, 0, 1)
            inputs[side] = seg.normalize(x[None].float() / 255)
        x = inputs[side]
        with torch.no_grad():
            logits = model(x.flip(-1)).flip(-1) if mirrored else model(x)
            total += F.interpolate(logits, size=(height, width), mode="bilinear",
                                   align_corners=False)
    return torch.sigmoid(total / len(views))[0, 0].numpy()


def keep_large_components(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Drop 8-connected components smaller than `fraction` of the largest one."""
    labels = label(mask, connectivity=2)
    if fraction <= 0 or labels.max() <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.isin(labels, np.nonzero(sizes >= fraction * sizes.max())[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--train", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--sides", type=int, nargs="*", default=[288, 320],
                        help="squash and aspect-preserving resizes at each size, with the mirror")
    parser.add_argument("--views", nargs="*", default=[],
                        help="squashed multi-view variants, e.g. 256+320 288f+320")
    parser.add_argument("--out", default="lab/results/validation/predict-sweep.json")
    args = parser.parse_args()
    model = load_model(args.checkpoint).eval()
    pairs = seg.find_pairs(args.train)
    val_pairs = [pairs[i] for i in seg.split_indices(pairs, args.val_fraction)[1]]
    # Read once, not per variant.
    truths = [seg.read_mask(mask_path) for _, mask_path, _ in val_pairs]
    # Variant names: "square-288f" is predict() as shipped (288 and its mirror, squashed).
    variants = {f"{'aspect' if keep_aspect else 'square'}-{side}f":
                (parse_views(f"{side}f"), keep_aspect)
                for side in args.sides for keep_aspect in (False, True)}
    variants.update({f"square-{spec}": (parse_views(spec), False) for spec in args.views})
    scores: dict = {}
    for resize, (views, keep_aspect) in variants.items():
        for (image_path, _, cls), truth in zip(val_pairs, truths):
            prob = probability(model, image_path, views, keep_aspect)
            for threshold in THRESHOLDS:
                for fraction in COMPONENT_FRACTIONS:
                    pred = keep_large_components(prob > threshold, fraction)
                    key = f"{resize} threshold {threshold} components {fraction}"
                    scores.setdefault(key, {}).setdefault(cls.split(".")[0], []).append(
                        seg.iou_score(pred, truth))
        print(f"{resize} done", flush=True)
    record = {"checkpoint": args.checkpoint, "val_images": len(val_pairs), "results": {
        key: {"val_iou": float(np.mean([v for vs in by_source.values() for v in vs])),
              **{source: float(np.mean(vs)) for source, vs in by_source.items()}}
        for key, by_source in scores.items()}}
    Path(args.out).write_text(json.dumps(record, indent=1))
    for key, row in sorted(record["results"].items(), key=lambda item: -item[1]["val_iou"]):
        print(f"{row['val_iou']:.4f}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
