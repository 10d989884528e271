"""Where a checkpoint's remaining error lies, class by class, with a picture of the worst frames.

    python -m lab.diagnose segmentation_model.pth --data ../shared/data/public_data

Every wrong pixel of every test image is put in one of three kinds:
- other object: predicted foreground in a connected component that does not touch the ground
  truth at all (a second animal or person the annotation leaves out, or a blob in the background);
- overreach: other predicted foreground, attached to the object (too wide a boundary);
- missed: ground-truth foreground predicted as background (thin legs, lines, cut-off parts).
It also reports the IoU each class would have with the "other object" components removed.
That is an oracle (it looks at the ground truth), so it is a diagnosis of what kind of error
is left, never a method or a choice: nothing here feeds back into the recipe.
Writes <out>/diagnosis.json and <out>/diagnosis.md, and the picture to --figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.measure import label  # noqa: E402

import segmentation as seg  # noqa: E402
from run_tests import _files, find_test_folders  # noqa: E402
from tools.checkpoint import load_model  # noqa: E402
from tools.report import add_key, paint  # noqa: E402


def error_kinds(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Pixel counts of the three kinds of error, the IoU, and the IoU without other objects."""
    components = label(pred, connectivity=2)
    touching = np.unique(components[pred & truth])
    other = pred & ~np.isin(components, touching)
    return {"other_object": int(other.sum()), "overreach": int((pred & ~truth & ~other).sum()),
            "missed": int((truth & ~pred).sum()), "iou": seg.iou_score(pred, truth),
            "iou_without_other_objects": seg.iou_score(pred & ~other, truth)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True,
                        help="folder with test/images and test/gt (or those two)")
    parser.add_argument("--out", default="lab/results/diagnosis")
    parser.add_argument("--figure", default="docs/failures.png", help="where the picture goes")
    parser.add_argument("--figure-classes", type=int, default=4,
                        help="the worst N classes pictured")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images_dir, gt_dir = find_test_folders(args.data)
    model = load_model(args.checkpoint)
    rows: dict = {}
    worst: dict = {}
    for key, image_path in _files(images_dir, seg.IMAGE_SUFFIXES).items():
        cls = image_path.parent.name
        truth = seg.read_mask(gt_dir / key.with_suffix(".png"))
        pred = seg.predict(model, image_path) > 0.5
        kinds = error_kinds(pred, truth)
        rows.setdefault(cls, []).append(kinds)
        if cls not in worst or kinds["iou"] < worst[cls][0]:
            worst[cls] = (kinds["iou"], image_path, pred, truth)
    summary = {}
    for cls, kinds in rows.items():
        wrong = sum(k["other_object"] + k["overreach"] + k["missed"] for k in kinds) or 1
        summary[cls] = {"images": len(kinds), "iou": float(np.mean([k["iou"] for k in kinds])),
                        "iou_without_other_objects": float(np.mean([k["iou_without_other_objects"]
                                                                    for k in kinds])),
                        **{kind: sum(k[kind] for k in kinds) / wrong
                           for kind in ("other_object", "overreach", "missed")}}
    record = {"checkpoint": args.checkpoint, "data": str(args.data), "classes": summary}
    (out / "diagnosis.json").write_text(json.dumps(record, indent=1))
    lines = ["| class | images | IoU | IoU without other objects (oracle) "
             "| wrong pixels: other object / overreach / missed |",
             "|---|---|---|---|---|"]
    for cls, row in sorted(summary.items()):
        lines.append(f"| {cls} | {row['images']} | {row['iou']:.4f} | "
                     f"{row['iou_without_other_objects']:.4f} | {row['other_object']:.0%} / "
                     f"{row['overreach']:.0%} / {row['missed']:.0%} |")
    (out / "diagnosis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    picked = sorted(summary, key=lambda c: summary[c]["iou"])[:args.figure_classes]
    fig, axes = plt.subplots(1, len(picked), figsize=(4 * len(picked), 3), squeeze=False)
    for ax, cls in zip(axes[0], picked):
        iou, image_path, pred, truth = worst[cls]
        ax.imshow(paint(seg.read_image(image_path), pred, truth))
        ax.set_title(f"{cls}\n{image_path.stem}: IoU {iou:.2f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("worst frame of the weakest classes", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    add_key(fig)
    fig.savefig(args.figure, dpi=80)
    plt.close(fig)
    # A 256-colour palette keeps the photo strip small enough to commit beside the README.
    Image.open(args.figure).convert("RGB").quantize(256).save(args.figure, optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
