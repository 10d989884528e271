"""Grade the upload locally the way the course's grader does.

    python run_tests.py [DATA_DIR] [--model segmentation_model.pth] [--python PYTHON]
    python run_tests.py [DATA_DIR] --report DIR [--worst N]      (+ a page of the worst images)

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
import hashlib
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

try:
    from segmentation import (DataError, IMAGE_SUFFIXES, OWN_OUTPUT, RECORD_FORMAT,
                              RECORD_VERSION, data_fingerprint, dice_score, file_sha256,
                              iou_score, load_model, open_image, pixel_accuracy, read_image,
                              read_mask, record_path, short_message)
except ImportError as error:  # e.g. a torchvision built for another torch, said in one line
    if __name__ == "__main__":
        sys.exit(f"error: {error}")
    raise

ROOT = Path(__file__).resolve().parent
UPLOAD = ("segmentation.py", "segmentation_model.pth")  # the two files the grader receives

# The course's marks: the first threshold the mean IoU reaches.
MARKS = ((0.85, 10), (0.80, 9), (0.75, 8), (0.70, 7), (0.60, 6), (0.50, 5), (0.40, 4),
         (0.30, 3), (0.20, 2))


def marks_for(iou: float) -> int:
    """The course's mark (0-10) for a mean IoU."""
    return next((mark for threshold, mark in MARKS if iou >= threshold), 0)


LAYOUTS_HELP = ("test/images/<class>/<name>.jpg + test/gt/<class>/<name>.png, or the course's "
                "00_test_val_input/test/images/<class>/ + 00_test_val_gt/<class>/")


def find_test_folders(data_dir) -> Tuple[Path, Path]:
    """(images folder, ground-truth folder) of either supported layout; else a DataError that
    says what is there, what is missing and the nearest layout that would work."""
    data_dir = Path(data_dir)
    layouts = [(data_dir / "test" / "images", data_dir / "test" / "gt"),
               (data_dir / "00_test_val_input" / "test" / "images", data_dir / "00_test_val_gt"),
               (data_dir / "00_test_val_input" / "test" / "images",
                data_dir / "00_test_val_gt" / "test" / "gt")]
    for images_dir, gt_dir in layouts:
        if images_dir.is_dir() and gt_dir.is_dir() and any(gt_dir.glob("*/*.png")):
            return images_dir, gt_dir
    raise DataError(layout_problem(data_dir))


def _listing(folder: Path, limit: int = 6) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    shown = ", ".join(names[:limit]) + more
    return shown or "nothing"


def layout_problem(data_dir: Path) -> str:
    """Why `data_dir` is not a test folder: what exists, what is missing, what would work."""
    if not data_dir.exists():
        parent = next(p for p in data_dir.parents if p.exists())
        return (f"{data_dir}: no such folder (the nearest that exists, {parent}, holds "
                f"{_listing(parent)})")
    if not data_dir.is_dir():
        return (f"{data_dir}: a file, not a folder; give the folder that holds test/images "
                "and test/gt")
    if (data_dir / "images").is_dir() or (data_dir / "gt").is_dir():
        return (f"{data_dir} holds images/ and gt/ itself: it is a split, not the data folder; "
                f"give the folder above it (e.g. {data_dir.parent} when this is its test/)"
                if data_dir.name == "test" else
                f"{data_dir} holds images/ and gt/ itself: move them into {data_dir / 'test'}/")
    for images_dir, gt_dir in ((data_dir / "test" / "images", data_dir / "test" / "gt"),
                               (data_dir / "00_test_val_input" / "test" / "images",
                                data_dir / "00_test_val_gt")):
        if images_dir.parent.is_dir():
            missing = [str(d) for d in (images_dir, gt_dir) if not d.is_dir()]
            if missing:
                return f"{data_dir}: found {images_dir.parent}, but not {' nor '.join(missing)}"
            return (f"{gt_dir}: no masks in <class>/<name>.png subfolders "
                    f"(it holds {_listing(gt_dir)})")
    nested = sorted(p.parent.parent for p in data_dir.glob("*/test/images"))
    if nested:
        return (f"{data_dir}: no test/ here, but {nested[0]} has one, one level deeper: give "
                f"{nested[0]}, or move its contents up into {data_dir}")
    found = f"it holds {_listing(data_dir)}"
    if (data_dir / "train").is_dir():
        found = "it holds train/ but no test/: the test split (test/images, test/gt) is missing"
    return f"{data_dir}: expected {LAYOUTS_HELP}; {found}"


def _files(folder: Path, suffixes, classes: Optional[Sequence[str]] = None) -> Dict[Path, Path]:
    """{class/name without suffix: path} for the files of `folder/<class>/` (those classes only),
    without the outputs of `segmentation.py predict` (skipped_outputs lists those)."""
    return {p.relative_to(folder).with_suffix(""): p for p in sorted(folder.glob("*/*"))
            if p.suffix.lower() in suffixes and (classes is None or p.parent.name in classes)
            and not OWN_OUTPUT.search(p.stem)}


def skipped_outputs(images_dir: Path) -> List[Path]:
    """Files in `images_dir/<class>/` that `segmentation.py predict` wrote: not graded."""
    return [p for p in sorted(images_dir.glob("*/*")) if p.suffix.lower() == ".png"
            and OWN_OUTPUT.search(p.stem)]


def check_images(paths: Sequence[Path]) -> None:
    """DataError naming every test photo that is not a readable image (the data's fault, not
    the upload's)."""
    problems = []
    for path in paths:
        try:
            open_image(path)
        except DataError as error:
            problems.append(str(error))
    if problems:
        raise DataError(f"{len(problems)} test photo(s) cannot be graded:\n  "
                        + "\n  ".join(problems))


def write_predictions(predict_fn: Callable[[str], np.ndarray], images_dir: Path, out_dir: Path,
                      classes: Optional[Sequence[str]] = None) -> float:
    """Predict every image and save `(p > 0.5) * 255` as PNG, as the grader does; returns the
    seconds per image."""
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
import ast, json, os, sys, time

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
try:  # exactly the grader's two lines; what is wrong is worked out by run_tests.py (exit 4)
    state = torch.load("segmentation_model.pth", map_location="cpu")
    if not isinstance(state, dict):
        raise TypeError(f"torch.load gave a {type(state).__name__}, not a dict")
    model.load_state_dict(state)
except Exception as error:
    print(f"checkpoint error: {type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(4)
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
    sources = upload_sources(project_dir, checkpoint)
    images_dir, gt_dir = find_test_folders(data_dir)
    images = _files(images_dir, IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{images_dir}: no images found in <class>/ subfolders")
    check_images(list(images.values()))
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(out_dir) if out_dir else Path(tmp) / "pred"
        jobs = [(path, pred_dir / key.with_suffix(".png")) for key, path in images.items()]
        environment = run_as_grader(sources, jobs, python, project_dir)
        records = score_predictions(pred_dir, gt_dir, images_dir)
    graded = summarize(records, environment.pop("seconds_per_image"))
    graded.update(environment=environment, images_dir=images_dir, gt_dir=gt_dir,
                  skipped=skipped_outputs(images_dir))
    return graded


def upload_sources(project_dir=ROOT, checkpoint=None) -> List[Path]:
    """[segmentation.py, the checkpoint] to upload; FileNotFoundError if one is missing."""
    project_dir = Path(project_dir)
    sources = [project_dir / UPLOAD[0], Path(checkpoint) if checkpoint else project_dir / UPLOAD[1]]
    for path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (the upload is {' and '.join(UPLOAD)})")
    return sources


def run_as_grader(sources: Sequence[Path], jobs: Sequence[Tuple[Path, Path]],
                  python: str = sys.executable, project_dir=ROOT) -> Dict:
    """Copy `sources` (segmentation.py, a checkpoint) alone into an empty folder under the names
    the grader gives them, and run GRADER there in a fresh `python` on `jobs`, (photo, where its
    thresholded mask goes) pairs. Returns its environment: python, torch and torchvision versions
    and seconds per image. UploadError where the grader would fail, saying why."""
    if os.sep in python:  # a path: absolute, since the upload runs in another folder (no
        python = os.path.abspath(python)  # resolve(): a venv's python is a link to keep as is
    with tempfile.TemporaryDirectory() as tmp:
        upload = Path(tmp) / "upload"
        upload.mkdir()
        for source, name in zip(sources, UPLOAD):
            shutil.copyfile(source, upload / name)
        (Path(tmp) / "jobs.json").write_text(json.dumps(
            [(str(Path(photo).resolve()), str(Path(out).resolve())) for photo, out in jobs]))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        result = subprocess.run([python, "-c", GRADER, str(Path(tmp) / "jobs.json"),
                                 str(Path(project_dir).resolve())],
                                cwd=upload, env=env, capture_output=True, text=True)
    if result.returncode == 4:
        raise UploadError(checkpoint_problem(sources[1], result.stderr))
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        reason = next((l[len("upload error: "):] for l in lines if l.startswith("upload error: ")),
                      None)
        raise UploadError(reason or f"{python} exited with {result.returncode}:\n"
                          + "\n".join(lines[-15:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def checkpoint_problem(checkpoint: Path, grader_stderr: str) -> str:
    """What is wrong with a checkpoint the grader's torch.load + load_state_dict refused."""
    try:
        load_model(checkpoint)  # the same checks, each kind of broken file named
    except (ValueError, FileNotFoundError) as error:
        return str(error)
    raw = next((line for line in grader_stderr.splitlines() if line.startswith("checkpoint error")),
               grader_stderr)
    return f"{checkpoint}: the grader's torch cannot load it: {short_message(raw)}"


# ------------------------------------------------------------------------------------------
# Which model: its training record, and the course's rule
# ------------------------------------------------------------------------------------------

RULE = ("the course requires uploading a model that train_model makes from its own training "
        "data")


def find_record(checkpoint: Path) -> Tuple[Optional[Dict], Optional[Path], List[str]]:
    """(record, its path, notes) for `checkpoint`: the training record beside it
    (segmentation_model-1.json for segmentation_model-1.pth) when it names the checkpoint's
    SHA-256, else another record in the same folder that does (a checkpoint renamed without
    its record). Notes say, one line each, why a record found was not used."""
    checkpoint = Path(checkpoint)
    own = record_path(checkpoint)
    digest = file_sha256(checkpoint)
    notes: List[str] = []
    others = sorted(p for p in checkpoint.parent.glob("*.json") if p != own)
    for path in ([own] if own.exists() else []) + others:
        record, problem = _read_record(path)
        if record is not None and record.get("sha256") == digest:
            return record, path, notes
        if path == own:
            notes.append(problem or f"{path.name} is the record of another checkpoint (its "
                                    f"SHA-256 differs from {checkpoint.name}'s): not used")
    return None, None, notes


def _read_record(path: Path) -> Tuple[Optional[Dict], Optional[str]]:
    """(the training record in `path`, None), or (None, why it is not one this version reads)."""
    try:
        if path.stat().st_size > 1 << 20:
            return None, f"{path.name}: too large to be a training record: not used"
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{path.name}: unreadable as a training record ({short_message(error, 80)})"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None, f"{path.name}: not a training record of this package: not used"
    if record.get("version") != RECORD_VERSION:
        return None, (f"{path.name}: a training record of another version "
                      f"({record.get('version')}; this package reads {RECORD_VERSION}): not used")
    trained = record.get("trained_on")
    if not (isinstance(trained, dict) and isinstance(trained.get("digest"), str)
            and isinstance(trained.get("pairs"), int) and isinstance(record.get("steps"), int)
            and isinstance(record.get("sha256"), str)):
        return None, f"{path.name}: an incomplete training record (edited by hand?): not used"
    return record, None


def describe_model(checkpoint: Path, data_dir: Optional[Path]) -> Dict:
    """Which model `checkpoint` is, in words, and whether it was trained on `data_dir/train`.

    Returns {"lines": what to print, "warning": the rule's line or None, "reference",
    "record", "trained_on_data"}. A warning, never an error: the grading goes on.
    """
    record, where, lines = find_record(checkpoint)
    train = data_dir / "train" if data_dir is not None else None
    has_train = train is not None and (train / "images").is_dir() and (train / "gt").is_dir()
    matches = None
    if has_train and record is not None:
        try:
            matches = data_fingerprint(train)["digest"] == record["trained_on"]["digest"]
        except (DataError, KeyError, TypeError):
            matches = False
    if record is None:
        lines.append(f"model: {checkpoint.name} has no training record (nothing says what it "
                     "was trained on)")
    elif record.get("reference"):
        pairs = record.get("trained_on", {}).get("pairs", "?")
        lines.append(f"model: the package's reference model, trained on the maintainers' "
                     f"stand-in data ({pairs:,} pairs), not on the course's: for trying the "
                     f"package, not for uploading (record {where.name})")
    else:
        trained = record.get("trained_on", {})
        lines.append(f"model: trained on {trained.get('folder')} ({trained.get('pairs', '?'):,} "
                     f"pairs, {str(record.get('finished', '?'))[:10]}, "
                     f"{record.get('steps', '?'):,} steps, seed {record.get('seed', '?')}; "
                     f"record {where.name})")
    warning = None
    if has_train and not matches:
        why = "it has no training record" if record is None else (
            "its record says it was trained on other data" if not record.get("reference")
            else "it is the package's reference model")
        warning = (f"warning: this checkpoint was not trained on {shown_path(train)} ({why}); "
                   f"{RULE}: python segmentation.py train {shown_path(train)}")
    elif has_train:
        lines.append(f"its training record matches {shown_path(train)} "
                     f"({record['trained_on']['pairs']:,} pairs)")
    return {"lines": lines, "warning": warning,
            "reference": bool(record and record.get("reference")),
            "record": str(where) if where else None, "trained_on_data": matches}


# ------------------------------------------------------------------------------------------
# The report: the worst images as pictures, in a page opened from disk
# ------------------------------------------------------------------------------------------

# Okabe-Ito colours, told apart with every common colour-vision deficiency.
COLOURS = {"tp": ((0, 158, 115), "object, found"),
           "fp": ((213, 94, 0), "painted as object, but background"),
           "fn": ((0, 114, 178), "object, missed")}
THUMB = 240                     # thumbnails' longer side, pixels
REPORT_MARK = ".grading-report"  # marks a folder this script wrote, so --overwrite may replace it


def error_overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The photo greyed and dimmed, with true positives, false positives and false negatives
    each painted in its COLOURS colour; background that is right stays grey."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.repeat((0.35 * grey + 60)[..., None], 3, axis=2)
    for kind, where in (("tp", pred & truth), ("fp", pred & ~truth), ("fn", ~pred & truth)):
        out[where] = 0.35 * out[where] + 0.65 * np.array(COLOURS[kind][0], np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


HISTOGRAM_BARS, HISTOGRAM_MEAN = "#8c8c8c", "#111111"  # neither is a colour of the error key


def _count_ticks(top: int) -> List[int]:
    """0, the top count and a few round counts between, for the histogram's y axis."""
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9)
                if top / s <= 5)
    return sorted(set(range(0, top + 1, step)) | {top})


def iou_histogram_svg(ious: Sequence[float], bins: int = 20, width: int = 560,
                      height: int = 200) -> str:
    """An inline SVG histogram of per-image IoU in `bins` bins over [0, 1], the mean marked;
    labelled axes (IoU, number of images), in greys that the error key never uses."""
    counts, _ = np.histogram(np.clip(ious, 0, 1), bins=bins, range=(0, 1))
    left, bottom, top = 52, 38, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    scale = plot_h / max(counts.max(), 1)
    bar_w = plot_w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="histogram of per-image IoU">']
    for i, count in enumerate(counts):
        h = count * scale
        parts.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{HISTOGRAM_BARS}">'
                     f'<title>IoU {i / bins:.2f}-{(i + 1) / bins:.2f}: {count} images</title>'
                     '</rect>')
    for tick in np.linspace(0, 1, 11):
        x = left + tick * plot_w
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 15}" font-size="11" '
                     f'text-anchor="middle">{tick:.1f}</text>')
    for count in _count_ticks(int(counts.max())):
        y = top + plot_h - count * scale
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#333"/>'
                     f'<text class="ytick" x="{left - 7}" y="{y + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{count}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
                 f'stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" '
                 'stroke="#333"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="12" '
                 f'text-anchor="middle">IoU of the image</text>'
                 f'<text x="12" y="{top + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">images</text>')
    mean_x = left + float(np.mean(ious)) * plot_w
    parts.append(f'<line x1="{mean_x:.1f}" y1="{top}" x2="{mean_x:.1f}" y2="{top + plot_h}" '
                 f'stroke="{HISTOGRAM_MEAN}" stroke-width="2" stroke-dasharray="4 3"/>'
                 f'<text x="{mean_x - 4:.1f}" y="{top + 10}" font-size="11" text-anchor="end" '
                 f'fill="{HISTOGRAM_MEAN}">mean {np.mean(ious):.3f}</text></svg>')
    return "".join(parts)


def cards_heading(shown: int, total: int) -> str:
    """The heading over the image cards, true for any number shown."""
    if shown >= total:
        return f"All {total} images, worst first"
    return f"The {shown} worst of {total} images"


def shown_path(path) -> str:
    """`path` as the student would type it from where the command ran: relative, never absolute
    (a report is shared, and an absolute path says where a home folder is)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # Windows: another drive has no relative path
        return Path(path).name


def prepare_report_dir(target: Path, overwrite: bool) -> Tuple[Path, Path]:
    """(where the report will end up, an empty staging folder beside it), checked before grading.

    An existing folder is never replaced silently: without `overwrite` the report goes beside it
    under a free name (DIR-1, DIR-2, ...); with it, only a report this script wrote is replaced.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"--report {target}: a file, not a folder")
    if target.exists() and overwrite and any(target.iterdir()) \
            and not (target / REPORT_MARK).exists():
        raise ValueError(f"--report {target}: holds files that are not a report of run_tests.py; "
                         "not replaced (give a new or empty folder)")
    final, n = target, 0
    while final.exists() and not overwrite:
        n += 1
        final = target.with_name(f"{target.name}-{n}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; a report is for reading
    except OSError as error:
        raise ValueError(f"--report {target}: cannot write there "
                         f"({error.strerror or error})") from None
    return final, staging


def _save_thumbnail(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array)
    image.thumbnail((THUMB, THUMB), Image.BILINEAR)
    image.save(path, quality=82)


def write_report(result: Dict, pred_dir: Path, final: Path, staging: Path, model_path: Path,
                 worst: int = 24) -> Path:
    """Write the grading report into `staging`, then move it to `final`; returns index.html's path.

    The page shows the marks, the per-class table, a histogram of per-image IoU and the `worst`
    images as photo + error overlay, each linked to its full-size files.
    """
    from html import escape  # only the report needs it
    records = sorted(result["records"], key=lambda r: (r["iou"], r["image"]))
    images = _files(result["images_dir"], IMAGE_SUFFIXES)
    truths = _files(result["gt_dir"], {".png"})
    (staging / "thumbs").mkdir()
    (staging / "full").mkdir()
    cards = []
    for rank, record in enumerate(records[:worst], 1):
        key = Path(record["image"])
        photo_path, truth_path = images[key], truths[key]
        photo = read_image(photo_path)
        pred, truth = read_mask(pred_dir / key.with_suffix(".png")), read_mask(truth_path)
        stem = f"{rank:03d}-{key.parent.name}-{key.name}"
        drawn = error_overlay(photo, pred, truth)
        _save_thumbnail(photo, staging / "thumbs" / f"{stem}.jpg")
        _save_thumbnail(drawn, staging / "thumbs" / f"{stem}.overlay.jpg")
        Image.fromarray(drawn).save(staging / "full" / f"{stem}.overlay.jpg", quality=88)
        shutil.copyfile(photo_path, staging / "full" / f"{stem}{photo_path.suffix.lower()}")
        shutil.copyfile(pred_dir / key.with_suffix(".png"), staging / "full" / f"{stem}.pred.png")
        shutil.copyfile(truth_path, staging / "full" / f"{stem}.gt.png")
        name = escape(record["image"])
        cards.append(
            f'<figure class="card" id="worst-{rank}" data-iou="{record["iou"]:.6f}">'
            f'<a href="full/{stem}{photo_path.suffix.lower()}"><img src="thumbs/{stem}.jpg" '
            f'alt="photo {name}"></a><a href="full/{stem}.overlay.jpg"><img '
            f'src="thumbs/{stem}.overlay.jpg" alt="errors on {name}"></a>'
            f'<figcaption><b>#{rank} IoU {record["iou"]:.3f}</b> {name}<br>'
            f'<a href="full/{stem}.pred.png">prediction</a> · <a href="full/{stem}.gt.png">'
            f'ground truth</a> · {pred.mean():.0%} predicted, '
            f'{truth.mean():.0%} true object</figcaption></figure>')
    by_class: Dict[str, List[Dict]] = {}
    for record in records:
        by_class.setdefault(record["class"], []).append(record)
    rank_of = {r["image"]: i for i, r in enumerate(records[:worst], 1)}
    rows = []
    worst_first = sorted(by_class.items(), key=lambda item: np.mean([r["iou"] for r in item[1]]))
    for cls, members in worst_first:
        low = members[0]  # records are sorted by IoU
        link = (f'<a href="#worst-{rank_of[low["image"]]}">{escape(low["image"])}</a>'
                if low["image"] in rank_of else escape(low["image"]))
        rows.append(f'<tr><td>{escape(cls)}</td><td>{len(members)}</td>'
                    f'<td>{np.mean([r["iou"] for r in members]):.4f}</td>'
                    f'<td>{link} ({low["iou"]:.3f})</td></tr>')
    env = result["environment"]
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:12]
    legend = "".join(f'<span class="key"><i style="background:rgb{colour}"></i>'
                     f'{escape(words)}</span>' for colour, words in COLOURS.values())
    mean = result["mean_iou"]
    model = result.get("model") or {"lines": [], "warning": None}
    model_words = "".join(f'<p class="model">{escape(line)}</p>\n' for line in model["lines"])
    if model["warning"]:
        model_words += f'<p class="warning">{escape(model["warning"])}</p>\n'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Grading report: mean IoU {mean:.4f}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }} .meta {{ color: #555; }}
.marks {{ font-size: 20px; }} table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 12px 3px 0; text-align: left; }}
.key {{ margin-right: 18px; white-space: nowrap; }}
.key i {{ display: inline-block; width: 14px; height: 14px; margin-right: 6px;
          vertical-align: -2px; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 14px; }}
.card {{ margin: 0; width: 500px; }} .card img {{ width: 244px; height: auto; margin-right: 4px; }}
figcaption {{ font-size: 13px; }}
.warning {{ border-left: 4px solid #d55e00; padding: 4px 10px; background: #fbeee6; }}
</style></head><body>
<h1>Grading report</h1>
<p class="marks"><b>{marks_for(mean)}/10 marks</b>: mean IoU <b>{mean:.4f}</b> over
{len(records)} images</p>
{model_words}<p class="meta">Model {escape(shown_path(model_path))} (SHA-256 {digest}...), graded
{time.strftime("%Y-%m-%d %H:%M")} with Python {escape(env["python"])}, torch {escape(env["torch"])};
data {escape(shown_path(result["images_dir"]))}.</p>
<h2>Per class, worst first</h2>
<table><tr><th>class</th><th>images</th><th>mean IoU</th><th>worst image (IoU)</th></tr>
{"".join(rows)}</table>
<h2>IoU per image</h2>
{iou_histogram_svg([r["iou"] for r in records])}
<h2>{cards_heading(len(cards), len(records))}</h2>
<p>Left: the photo. Right: the prediction against the ground truth. {legend}
Click a picture for the full-size file.</p>
<div class="grid">
{"".join(cards)}
</div></body></html>
"""
    (staging / "index.html.tmp").write_text(page, encoding="utf-8")
    os.replace(staging / "index.html.tmp", staging / "index.html")
    (staging / REPORT_MARK).write_text("written by run_tests.py --report\n")
    if final.exists():  # --overwrite of an earlier report (prepare_report_dir checked it)
        shutil.rmtree(final)
    os.replace(staging, final)
    return final / "index.html"


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------

def default_data_dir() -> Tuple[Path, str]:
    """public_data/ when the course's test data is in it, the course's test folder in tests/,
    else the bundled examples/. A public_data/ with something else in it is a DataError that
    says what was found and what is missing: the student meant it to be graded."""
    public = ROOT / "public_data"
    if public.is_dir() and any(p.name != "README.md" for p in public.iterdir()):
        find_test_folders(public)  # raises, saying what is there and what is missing
        return public, "the course's data in public_data/"
    course = ROOT / "tests"
    if any(course.glob("00_test_val_*")):
        find_test_folders(course)
        return course, "the course's data in tests/"
    return ROOT / "examples", ("the bundled examples/ (12 Oxford-IIIT Pet photos): put the "
                               "course's data in public_data/ to grade on it")


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return int(value)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Layouts of DATA_DIR:\n"
               "  DATA_DIR/test/images/<class>/<name>.jpg with\n"
               "    DATA_DIR/test/gt/<class>/<name>.png\n"
               "  DATA_DIR/00_test_val_input/test/images/<class>/ with\n"
               "    DATA_DIR/00_test_val_gt/<class>/\n"
               "Without DATA_DIR: public_data/ if anything is in it, else tests/00_test_val_* if\n"
               "present, else the 12 bundled photos in examples/.")
    parser.add_argument("data_dir", nargs="?", default=None, metavar="DATA_DIR",
                        help="the folder to grade (default: see below)")
    parser.add_argument("--model", default=None,
                        help="the checkpoint to grade (default: segmentation_model.pth)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs the upload, e.g. the grader's environment "
                             "(default: this one)")
    parser.add_argument("--out", help="keep the predicted PNGs in this folder")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--report", metavar="DIR",
                        help="also write a page to look at, DIR/index.html: marks, per-class "
                             "table, IoU histogram and the worst images with their errors "
                             "coloured")
    parser.add_argument("--worst", type=_positive, default=24, metavar="N",
                        help="how many of the worst images the report shows (default: 24)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier report in DIR (otherwise it goes to DIR-1, ...)")
    args = parser.parse_args(argv)
    try:
        if args.data_dir is None:
            data_dir, what = default_data_dir()
            print(f"grading on {what}")
        else:
            data_dir = Path(args.data_dir)
        report = prepare_report_dir(Path(args.report), args.overwrite) if args.report else None
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pred_dir = Path(args.out) if args.out else Path(tmp) / "pred"
            try:
                result = grade_upload(data_dir, ROOT, args.model, args.python, pred_dir)
            except UploadError as error:
                print(f"upload rejected: {error}", file=sys.stderr)
                return 2
            except (DataError, FileNotFoundError, ValueError) as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            model_path = Path(args.model) if args.model else ROOT / UPLOAD[1]
            result["model"] = describe_model(model_path, Path(data_dir))
            print_result(result)
            if report is not None:
                page = write_report(result, pred_dir, *report, model_path, args.worst)
                print(f"report: {page}")
                report = None  # moved into place
    finally:
        if report is not None:
            shutil.rmtree(report[1], ignore_errors=True)  # the unused staging folder
    if args.json:
        left_out = ("records", "images_dir", "gt_dir", "skipped")
        keep = {k: v for k, v in result.items() if k not in left_out}
        Path(args.json).write_text(json.dumps(keep, indent=1))
    return 0


def print_result(result: Dict) -> None:
    """The grade as the student reads it: environment, per-class IoU, mean, marks."""
    env = result["environment"]
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} file(s) that `segmentation.py predict` wrote "
              f"among the test photos (e.g. {result['skipped'][0]}): not graded")
    print(f"graded {' + '.join(UPLOAD)} alone, as uploaded: Python {env['python']}, "
          f"torch {env['torch']}, torchvision {env['torchvision']}")
    for name, iou in result["per_class"].items():
        print(f"{name:32s} {result['class_sizes'][name]:4d} images  IoU {iou:.4f}")
    print(f"{len(result['records'])} images, {result['seconds_per_image'] * 1000:.0f} ms per image")
    model = result.get("model")
    if model is not None:  # said next to the marks: the per-class lines above may be many
        print("\n".join(model["lines"] + ([model["warning"]] if model["warning"] else [])))
    print(f"mean IoU {result['mean_iou']:.4f}")
    print(f"marks {marks_for(result['mean_iou'])}/10")


if __name__ == "__main__":
    sys.exit(main())
