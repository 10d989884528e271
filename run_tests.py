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
    from segmentation import DataError, IMAGE_SUFFIXES, iou_score, open_image, read_mask
    from tools.checkpoint import describe_model, load_model, short_message
    from tools.predict import OWN_OUTPUT
    from tools.report import prepare_report_dir, write_report
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


def how_sure(ious: Sequence[float], resamples: int = 10_000, seed: int = 0) -> Dict:
    """How sure the marks are, since the course grades a hidden sample of photos like these:
    the mean IoU of `resamples` bootstrap resamples of the graded images (as many, drawn with
    replacement; seeded, so every run says the same), its 95% range, and the share of
    resamples in each marks band that has any, best band first."""
    ious = np.asarray(ious, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.concatenate([ious[rng.integers(0, len(ious), (min(1000, resamples - start),
                                                              len(ious)))].mean(1)
                            for start in range(0, resamples, 1000)])  # 1,000 rows at a time
    bands = np.array([marks_for(mean) for mean in means])
    low, high = np.percentile(means, [2.5, 97.5])
    return {"resamples": resamples, "low": float(low), "high": float(high),
            "chances": {int(m): float((bands == m).mean())
                        for m in sorted(set(bands), reverse=True)}}


def how_sure_words(sure: Dict, images: int) -> str:
    """how_sure's answer in one line, said next to the marks."""
    def share(value: float) -> str:
        return "<1%" if 0 < value < 0.005 else ">99%" if 0.995 <= value < 1 else f"{value:.0%}"
    chances = ", ".join(f"{marks} marks {share(value)}" for marks, value in sure["chances"].items())
    return (f"how sure: a hidden sample of {images:,} photos like these would score "
            f"{sure['low']:.3f}-{sure['high']:.3f} (95% of {sure['resamples']:,} resamples of "
            f"them): {chances}")


# The test folder's layouts, (photos, ground truth) under DATA_DIR: the stand-in's and the
# course's own (its ground truth with or without test/gt/ inside).
LAYOUTS = (("test/images", "test/gt"), ("00_test_val_input/test/images", "00_test_val_gt"),
           ("00_test_val_input/test/images", "00_test_val_gt/test/gt"))
LAYOUTS_HELP = " or ".join(f"{images}/<class>/<name>.jpg + {gt}/<class>/<name>.png"
                           for images, gt in LAYOUTS[:2])


def find_test_folders(data_dir) -> Tuple[Path, Path]:
    """(images folder, ground-truth folder) of a LAYOUT; else a DataError that says what is
    there, what is missing and the nearest layout that would work."""
    data_dir = Path(data_dir)
    for images_dir, gt_dir in ((data_dir / i, data_dir / g) for i, g in LAYOUTS):
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
    for images_dir, gt_dir in ((data_dir / i, data_dir / g) for i, g in LAYOUTS[:2]):
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
    without the outputs of `tools/predict.py` (skipped_outputs lists those)."""
    return {p.relative_to(folder).with_suffix(""): p for p in sorted(folder.glob("*/*"))
            if p.suffix.lower() in suffixes and (classes is None or p.parent.name in classes)
            and not OWN_OUTPUT.search(p.stem)}


def skipped_outputs(images_dir: Path) -> List[Path]:
    """Files in `images_dir/<class>/` that `tools/predict.py` wrote: not graded."""
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


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient of two binary masks; two empty masks agree fully (1.0)."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    total = pred.sum() + target.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, target).sum() / total)


def pixel_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pixels labelled correctly."""
    return float((np.asarray(pred, dtype=bool) == np.asarray(target, dtype=bool)).mean())


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
                        "photo": str(images[key]), "truth": str(truths[key]),
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
        reason = next((line[len("upload error: "):] for line in lines
                       if line.startswith("upload error: ")), None)
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


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Layouts of DATA_DIR:\n" + "".join(
            f"  DATA_DIR/{images}/<class>/<name>.jpg with\n    DATA_DIR/{gt}/<class>/<name>.png\n"
            for images, gt in LAYOUTS[:2]) +
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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
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
            result["marks"] = marks_for(result["mean_iou"])
            sure = how_sure([r["iou"] for r in result["records"]])
            result["how_sure"] = {**sure, "words": how_sure_words(sure, len(result["records"]))}
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
        print(f"skipped {len(result['skipped'])} file(s) that `tools/predict.py` wrote "
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
    if "how_sure" in result:
        print(result["how_sure"]["words"])


if __name__ == "__main__":
    sys.exit(main())
