"""Two checkpoints side by side on one test class's worst frames, with a colour key.

    python -m lab.before_after OLD.pth NEW.pth --data ../shared/data/public_data \
        --class davis.mallard-water --figure docs/water-shipped-vs-fast.png

--data is a folder with test/{images,gt} (as run_tests.py takes) or a split's {images,gt} itself.

The frames shown are the `--rows` on which the worse of the two models scores lowest, in name
order. Colours as in the grading report (tools/report.py's paint), with its key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import segmentation as seg  # noqa: E402
from run_tests import _files, find_test_folders  # noqa: E402
from tools.checkpoint import load_model  # noqa: E402
from tools.report import add_key, paint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--data", required=True)
    parser.add_argument("--class", dest="cls", required=True)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--figure", required=True)
    parser.add_argument("--labels", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="titles for the two columns (default: the checkpoints' names)")
    args = parser.parse_args()
    data = Path(args.data)
    # A split folder itself (e.g. train/, for a class held out of training) or a test layout.
    is_split = (data / "images").is_dir() and (data / "gt").is_dir()
    images_dir, gt_dir = (data / "images", data / "gt") if is_split else find_test_folders(data)
    images = _files(images_dir, seg.IMAGE_SUFFIXES, [args.cls])
    models = [load_model(args.before), load_model(args.after)]
    frames = []
    for key, path in images.items():
        truth = seg.read_mask(gt_dir / key.with_suffix(".png"))
        preds = [seg.predict(model, path) > 0.5 for model in models]
        frames.append((min(seg.iou_score(p, truth) for p in preds), key, path, truth, preds))
    means = [np.mean([seg.iou_score(f[4][i], f[3]) for f in frames]) for i in range(2)]
    worst = sorted(sorted(frames, key=lambda f: f[0])[:args.rows], key=lambda f: str(f[1]))
    labels = args.labels or [Path(p).parent.name or Path(p).stem for p in (args.before, args.after)]
    fig, axes = plt.subplots(len(worst), 2, figsize=(9, 2.7 * len(worst)), squeeze=False)
    for row, (_, key, path, truth, preds) in zip(axes, worst):
        image = seg.read_image(path)
        for ax, pred, name, mean in zip(row, preds, labels, means):
            ax.imshow(paint(image, pred, truth))
            ax.set_title(f"{name}: {key.name} "
                         f"IoU {seg.iou_score(pred, truth):.2f} (class {mean:.3f})", fontsize=8)
            ax.axis("off")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    add_key(fig)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=80)
    print(f"{args.figure}: {args.cls}, class IoU {means[0]:.4f} before, {means[1]:.4f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
