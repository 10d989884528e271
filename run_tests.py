"""Grade the upload locally the way the course's grader does.

    python run_tests.py [DATA_DIR] [--model segmentation_model.pth] [--python PYTHON]

What is graded is what the grader receives: `segmentation.py` and the checkpoint are copied
alone into an empty folder and run there by a fresh interpreter (`--python`, default this one),
so an import of another project file, a pickled model instead of a state_dict, or a checkpoint
that does not fit `get_model()` fails here as it would there, with a message that says which.

DATA_DIR holds either `test/images/<class>/<name>.jpg` with `test/gt/<class>/<name>.png`, or
the course's `00_test_val_input/test/images/<class>/` with `00_test_val_gt/<class>/`. Without
it: `public_data/` when the course's data is there, else the bundled `examples/`. Like the
grader: predictions are thresholded at 0.5 and saved as PNG, read back, compared with the
ground truth read as grey > 127, IoU per image, then averaged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from segmentation import DataError, IMAGE_SUFFIXES, dice_score, iou_score, pixel_accuracy, read_mask

ROOT = Path(__file__).resolve().parent
UPLOAD = ("segmentation.py", "segmentation_model.pth")  # the two files the grader receives

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


def summarize(records: List[Dict], seconds_per_image: float) -> Dict:
    """Mean IoU, per-class means and sizes of graded `records`."""
    per_class: Dict[str, List[float]] = {}
    for record in records:
        per_class.setdefault(record["class"], []).append(record["iou"])
    return {"mean_iou": float(np.mean([r["iou"] for r in records])),
            "per_class": {c: float(np.mean(v)) for c, v in sorted(per_class.items())},
            "class_sizes": {c: len(v) for c, v in sorted(per_class.items())},
            "records": records, "seconds_per_image": seconds_per_image}


def evaluate(predict_fn: Callable[[str], np.ndarray], data_dir, out_dir=None,
             classes: Optional[Sequence[str]] = None) -> Dict:
    """Grade `predict_fn(path) -> H x W probabilities`, in this process, on DATA_DIR's test split.

    Returns {"mean_iou", "per_class", "class_sizes", "records", "seconds_per_image"}; each
    record holds one image's IoU, Dice and pixel accuracy. For the benchmark's variants;
    the upload itself is graded by `grade_upload`.
    """
    images_dir, gt_dir = find_test_folders(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(out_dir) if out_dir else Path(tmp)
        seconds = write_predictions(predict_fn, images_dir, pred_dir, classes)
        records = score_predictions(pred_dir, gt_dir, images_dir, classes)
    return summarize(records, seconds)


# ------------------------------------------------------------------------------------------
# The upload, graded alone in a fresh interpreter
# ------------------------------------------------------------------------------------------

class UploadError(RuntimeError):
    """The two uploaded files would fail in the course's grader; the message says why."""


# What the course's grader does with the upload, plus checks that name each way it can fail.
# Run as `python -c GRADER jobs.json project_dir` in a folder holding only the two files.
GRADER = r"""
import ast, json, os, pickle, sys, time

def fail(message):
    print("upload error: " + message, file=sys.stderr)
    sys.exit(3)

def module_imports(node):
    # Top-level names imported when the module loads; not inside functions (run later, if at
    # all) nor inside try blocks (a guarded import is the author's deliberate fallback).
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            yield from (alias.name.split(".")[0] for alias in child.names)
        elif isinstance(child, ast.ImportFrom) and child.level == 0:
            yield child.module.split(".")[0]
        elif not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Try)):
            yield from module_imports(child)

jobs_path, project_dir = sys.argv[1:3]
import numpy, PIL.Image, torch, torchvision      # what the grader's environment brings
try:
    from segmentation import predict, get_model
except ModuleNotFoundError as error:
    name = (error.name or "?").split(".")[0]
    local = [f for f in (name + ".py", name) if os.path.exists(os.path.join(project_dir, f))]
    if local:
        fail(f"segmentation.py imports `{name}`, a file of your project ({local[0]}) that the "
             "grader does not receive: only segmentation.py and segmentation_model.pth are "
             "uploaded, so move that code into segmentation.py")
    fail(f"segmentation.py imports `{name}`, which this Python ({sys.executable}) does not "
         "have; the grader has only torch, torchvision, numpy, Pillow and scikit-image")
except Exception as error:
    fail(f"importing segmentation.py failed: {type(error).__name__}: {error}")
stdlib = getattr(sys, "stdlib_module_names", None)      # Python 3.10 and newer
if stdlib is not None:
    allowed = {"__future__", "torch", "torchvision", "numpy", "PIL", "skimage"} | set(stdlib)
    tree = ast.parse(open("segmentation.py", encoding="utf-8").read())
    extra = sorted(set(module_imports(tree)) - allowed)
    if extra:
        fail(f"segmentation.py imports {', '.join(extra)}, which the grader does not have: "
             "it has only torch, torchvision, numpy, Pillow and scikit-image")
try:
    model = get_model()
except Exception as error:
    fail(f"get_model() failed: {type(error).__name__}: {error}")
try:
    state = torch.load("segmentation_model.pth", map_location="cpu")
except Exception as error:
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        fail("segmentation_model.pth holds a pickled model object, not a state_dict: "
             "save it with torch.save(model.state_dict(), 'segmentation_model.pth')")
    fail(f"segmentation_model.pth cannot be read by torch.load: {type(error).__name__}: {error}")
if isinstance(state, torch.nn.Module):
    fail("segmentation_model.pth holds a pickled model object, not a state_dict: "
         "save it with torch.save(model.state_dict(), 'segmentation_model.pth')")
if not isinstance(state, dict):
    fail(f"segmentation_model.pth holds a {type(state).__name__}, not a state_dict")
try:
    model.load_state_dict(state)
except Exception as error:
    lines = str(error).strip().splitlines()
    fail("segmentation_model.pth does not fit get_model() (keys or shapes differ): "
         + " ".join(line.strip() for line in lines[:4])[:600])
jobs = json.load(open(jobs_path))
start = time.perf_counter()
for image_path, out_path in jobs:
    try:
        prob = predict(model, image_path)
    except Exception as error:
        fail(f"predict(model, {image_path!r}) failed: {type(error).__name__}: {error}")
    width, height = PIL.Image.open(image_path).size
    if not isinstance(prob, numpy.ndarray) or prob.shape != (height, width):
        fail(f"{image_path}: predict returned {getattr(prob, 'shape', type(prob).__name__)}, "
             f"expected an array of shape {(height, width)}")
    if not numpy.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        fail(f"{image_path}: predict returned values outside [0, 1]")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    PIL.Image.fromarray((prob > 0.5).astype("uint8") * 255).save(out_path)
seconds = (time.perf_counter() - start) / max(len(jobs), 1)
print(json.dumps({"seconds_per_image": seconds, "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "python": sys.version.split()[0]}))
"""


def grade_upload(data_dir, project_dir=ROOT, checkpoint=None, python: str = sys.executable,
                 out_dir=None) -> Dict:
    """Grade `project_dir`'s segmentation.py with `checkpoint` (default: its segmentation_model.pth)
    as the course does: both copied alone into an empty folder, run there by `python`.

    Returns evaluate()'s dict plus "environment" (python, torch, torchvision versions).
    Raises UploadError when the upload would fail in the grader, DataError for bad data.
    """
    project_dir = Path(project_dir)
    if os.sep in python:  # a path: absolute, since the upload runs in another folder (no
        python = os.path.abspath(python)  # resolve(): a venv's python is a link to keep as is
    sources = [project_dir / UPLOAD[0], Path(checkpoint) if checkpoint else project_dir / UPLOAD[1]]
    for path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (the upload is {' and '.join(UPLOAD)})")
    images_dir, gt_dir = find_test_folders(data_dir)
    images = _files(images_dir, IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{images_dir}: no images found in <class>/ subfolders")
    with tempfile.TemporaryDirectory() as tmp:
        upload, pred_dir = Path(tmp) / "upload", Path(out_dir) if out_dir else Path(tmp) / "pred"
        upload.mkdir()
        for source, name in zip(sources, UPLOAD):
            shutil.copyfile(source, upload / name)
        jobs = [(str(path.resolve()), str((pred_dir / key.with_suffix(".png")).resolve()))
                for key, path in images.items()]
        (Path(tmp) / "jobs.json").write_text(json.dumps(jobs))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        result = subprocess.run([python, "-c", GRADER, str(Path(tmp) / "jobs.json"),
                                 str(project_dir.resolve())],
                                cwd=upload, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            reason = next((l[len("upload error: "):] for l in lines if l.startswith("upload error: ")),
                          None)
            raise UploadError(reason or f"{python} exited with {result.returncode}:\n"
                              + "\n".join(lines[-15:]))
        environment = json.loads(result.stdout.strip().splitlines()[-1])
        records = score_predictions(pred_dir, gt_dir, images_dir)
    graded = summarize(records, environment.pop("seconds_per_image"))
    graded["environment"] = environment
    return graded


def default_data_dir() -> Tuple[Path, str]:
    """public_data/ when the course's test data is in it, else the bundled examples/."""
    for candidate in (ROOT / "public_data", ROOT / "tests"):
        try:
            find_test_folders(candidate)
            return candidate, f"the course's data in {candidate.name}/"
        except DataError:
            continue
    return ROOT / "examples", ("the bundled examples/ (12 Oxford-IIIT Pet photos): put the "
                               "course's data in public_data/ to grade on it")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default=None,
                        help="default: public_data/ if it holds the course's data, else examples/")
    parser.add_argument("--model", default=None, help="checkpoint (default: segmentation_model.pth)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs the upload (e.g. the grader's environment)")
    parser.add_argument("--out", help="keep the predicted PNGs in this folder")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        data_dir, what = default_data_dir()
        print(f"grading on {what}")
    else:
        data_dir = Path(args.data_dir)
    try:
        result = grade_upload(data_dir, ROOT, args.model, args.python, args.out)
    except UploadError as error:
        print(f"upload rejected: {error}", file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    env = result["environment"]
    print(f"graded {' + '.join(UPLOAD)} alone, as uploaded: Python {env['python']}, "
          f"torch {env['torch']}, torchvision {env['torchvision']}")
    for name, iou in result["per_class"].items():
        print(f"{name:32s} {result['class_sizes'][name]:4d} images  IoU {iou:.4f}")
    print(f"{len(result['records'])} images, {result['seconds_per_image'] * 1000:.0f} ms per image")
    print(f"mean IoU {result['mean_iou']:.4f}")
    print(f"marks {marks_for(result['mean_iou'])}/10")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items() if k != "records"},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
