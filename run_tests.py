"""Score segmentation_model.pth locally the way the course's grader does.

    python run_tests.py [DATA_DIR] [--model segmentation_model.pth]

DATA_DIR (default `public_data`) holds either `test/images/<class>/<name>.jpg` with
`test/gt/<class>/<name>.png`, or the course's `00_test_val_input/test/images/<class>/` with
`00_test_val_gt/<class>/`. Like the grader: predictions are thresholded at 0.5 and saved as PNG,
read back, compared with the ground truth read as grey > 127, IoU per image, then averaged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from segmentation import (DataError, IMAGE_SUFFIXES, dice_score, iou_score, load_model,
                          pixel_accuracy, predict, read_mask)

# The course's marks: the first threshold the mean IoU reaches.
MARKS = ((0.85, 10), (0.80, 9), (0.75, 8), (0.70, 7), (0.60, 6), (0.50, 5), (0.40, 4),
         (0.30, 3), (0.20, 2))


def marks_for(iou: float) -> int:
    """The course's mark (0-10) for a mean IoU."""
    return next((mark for threshold, mark in MARKS if iou >= threshold), 0)


def find_test_folders(data_dir) -> Tuple[Path, Path]:
    """(images folder, ground-truth folder) of either supported layout."""
    data_dir = Path(data_dir)
    layouts = [(data_dir / "test" / "images", data_dir / "test" / "gt"),
               (data_dir / "00_test_val_input" / "test" / "images", data_dir / "00_test_val_gt"),
               (data_dir / "00_test_val_input" / "test" / "images",
                data_dir / "00_test_val_gt" / "test" / "gt")]
    for images_dir, gt_dir in layouts:
        if images_dir.is_dir() and gt_dir.is_dir() and any(gt_dir.glob("*/*.png")):
            return images_dir, gt_dir
    raise DataError(f"{data_dir}: expected test/images + test/gt, or 00_test_val_input/test/images "
                    f"+ 00_test_val_gt, each with <class>/ subfolders")


def _files(folder: Path, suffixes, classes: Optional[Sequence[str]] = None) -> Dict[Path, Path]:
    """{class/name without suffix: path} for the files of `folder/<class>/` (those classes only)."""
    return {p.relative_to(folder).with_suffix(""): p for p in sorted(folder.glob("*/*"))
            if p.suffix.lower() in suffixes and (classes is None or p.parent.name in classes)}


def write_predictions(predict_fn: Callable[[str], np.ndarray], images_dir: Path, out_dir: Path,
                      classes: Optional[Sequence[str]] = None) -> float:
    """Predict every image and save `(p > 0.5) * 255` as PNG, as the grader does; seconds per image."""
    images = _files(images_dir, IMAGE_SUFFIXES, classes)
    if not images:
        raise DataError(f"{images_dir}: no images found in <class>/ subfolders")
    start = time.perf_counter()
    for key, path in images.items():
        prob = predict_fn(str(path))
        height, width = Image.open(path).size[::-1]
        if not isinstance(prob, np.ndarray) or prob.shape != (height, width):
            raise ValueError(f"{path}: predict returned {getattr(prob, 'shape', type(prob))}, "
                             f"expected an array of shape {(height, width)}")
        out = out_dir / key.with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((prob > 0.5).astype(np.uint8) * 255).save(out)
    return (time.perf_counter() - start) / len(images)


def score_predictions(pred_dir: Path, gt_dir: Path, images_dir: Path,
                      classes: Optional[Sequence[str]] = None) -> List[Dict]:
    """Per-image scores of the saved predictions; DataError listing every mismatch found."""
    images = _files(images_dir, IMAGE_SUFFIXES, classes)
    truths = _files(gt_dir, {".png"}, classes)
    problems = [f"{images[k]}: no ground truth (expected {gt_dir / k}.png)"
                for k in images if k not in truths]
    problems += [f"{truths[k]}: ground truth without an image" for k in truths if k not in images]
    records = []
    for key in sorted(k for k in images if k in truths):
        pred_path = pred_dir / key.with_suffix(".png")
        try:
            pred, truth = read_mask(pred_path), read_mask(truths[key])
        except DataError as error:
            problems.append(f"prediction or ground truth unreadable: {error}")
            continue
        if pred.shape != truth.shape:
            problems.append(f"{truths[key]}: ground truth is {truth.shape[1]}x{truth.shape[0]}, "
                            f"the image and its prediction {pred.shape[1]}x{pred.shape[0]}")
            continue
        records.append({"image": key.as_posix(), "class": key.parts[0],
                        "iou": iou_score(pred, truth), "dice": dice_score(pred, truth),
                        "accuracy": pixel_accuracy(pred, truth)})
    if problems:
        raise DataError(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return records


def evaluate(predict_fn: Callable[[str], np.ndarray], data_dir, out_dir=None,
             classes: Optional[Sequence[str]] = None) -> Dict:
    """Grade `predict_fn(path) -> H x W probabilities` on DATA_DIR's test split (or some classes).

    Returns {"mean_iou", "per_class", "class_sizes", "records", "seconds_per_image"}; each
    record holds one image's IoU, Dice and pixel accuracy.
    """
    images_dir, gt_dir = find_test_folders(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(out_dir) if out_dir else Path(tmp)
        seconds = write_predictions(predict_fn, images_dir, pred_dir, classes)
        records = score_predictions(pred_dir, gt_dir, images_dir, classes)
    per_class: Dict[str, List[float]] = {}
    for record in records:
        per_class.setdefault(record["class"], []).append(record["iou"])
    return {"mean_iou": float(np.mean([r["iou"] for r in records])),
            "per_class": {c: float(np.mean(v)) for c, v in sorted(per_class.items())},
            "class_sizes": {c: len(v) for c, v in sorted(per_class.items())},
            "records": records, "seconds_per_image": seconds}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default="public_data")
    parser.add_argument("--model", default="segmentation_model.pth")
    parser.add_argument("--out", help="keep the predicted PNGs in this folder")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        result = evaluate(lambda path: predict(model, path), args.data_dir, args.out)
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, iou in result["per_class"].items():
        print(f"{name:32s} {result['class_sizes'][name]:4d} images  IoU {iou:.4f}")
    print(f"{len(result['records'])} images, {result['seconds_per_image'] * 1000:.0f} ms per image")
    print(f"mean IoU {result['mean_iou']:.4f}")
    print(f"marks {marks_for(result['mean_iou'])}/10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
