"""Prepare the upload: the two files the course's grader takes, checked as it will use them.

    python tools/prepare_upload.py segmentation_model-1.pth                  # -> upload/
    python tools/prepare_upload.py segmentation_model-1.pth --out upload.zip  # -> a zip
    python tools/prepare_upload.py segmentation_model.pth --dry-run-with-reference-model

Given a checkpoint that train_model saved, it
1. checks its training record (segmentation_model-1.json beside it) against DATA/train: the
   course allows uploading only a model that train_model made from the course's data;
2. loads it strictly into get_model() and runs predict on one photo in a clean folder holding
   only segmentation.py and the checkpoint, in a fresh Python, as the grader will;
3. writes segmentation.py and the checkpoint, as segmentation_model.pth, into a new folder or
   zip (never over an existing one: upload-1/, upload-2/, ... then).
The package's reference model is refused: it was trained on the maintainers' stand-in data.
`--dry-run-with-reference-model` packs it anyway, to try this command before training.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:  # the grader's own steps, shared with the local grading
    import run_tests
    from segmentation import DataError, IMAGE_SUFFIXES, data_fingerprint, free_path
    from tools.checkpoint import RULE, find_record, shown_path
    from tools.predict import OWN_OUTPUT
except ImportError as error:  # e.g. a torchvision built for another torch, said in one line
    sys.exit(f"error: {error}")

REFERENCE_FLAG = "--dry-run-with-reference-model"


class UploadRefused(Exception):
    """The checkpoint must not be uploaded, or cannot be: the message says why and what to do."""


def check_record(checkpoint: Path, train: Path, dry_run: bool) -> str:
    """What the checkpoint's training record says, after checking it against `train`; raises
    UploadRefused for the reference model (unless `dry_run`), no record, or other data."""
    record, where, notes = find_record(checkpoint)
    command = f"python segmentation.py train {train}"
    if record is None:
        missing = f"no {checkpoint.with_suffix('.json').name} beside it"
        raise UploadRefused(
            f"{checkpoint}: no training record ({'; '.join(notes) or missing}), so nothing "
            f"shows it was trained on {train}; upload a checkpoint that {command} saved, with "
            "the record it wrote beside it")
    if record.get("reference"):
        if not dry_run:
            raise UploadRefused(
                f"{checkpoint} is the package's reference model, trained on the maintainers' "
                f"stand-in data, not on the course's: train your own ({command}), then prepare "
                f"that one (or add {REFERENCE_FLAG} to try this command)")
        return "the package's reference model (a dry run: do not upload these files)"
    fingerprint = data_fingerprint(train)
    trained = record.get("trained_on", {})
    if trained.get("digest") != fingerprint["digest"]:
        raise UploadRefused(
            f"{checkpoint} was trained on {trained.get('folder')} ({trained.get('pairs', '?')} "
            f"pairs), not on {train} ({fingerprint['pairs']} pairs): {RULE}; "
            f"train on it ({command}) and prepare that checkpoint")
    return (f"trained on {train} ({fingerprint['pairs']:,} pairs, {record.get('steps', '?'):,} "
            f"steps, seed {record.get('seed', '?')}, {str(record.get('finished', '?'))[:10]}; "
            f"record {where.name})")


def sample_photo(data: Path) -> Path:
    """One photo to predict: the first of DATA/test/images, else of DATA/train/images."""
    for folder in (data / "test" / "images", data / "train" / "images"):
        photos = [p for p in sorted(folder.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES
                  and not OWN_OUTPUT.search(p.stem)]
        if photos:
            return photos[0]
    raise DataError(f"{data}: no photo in test/images/<class>/ nor train/images/<class>/")


def write_upload(sources: List[Path], target: Path) -> Path:
    """The two files under the grader's names in a new folder, or a zip when `target` ends in
    .zip; a free name beside an existing one. Written beside, then renamed into place."""
    final = free_path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        if final.suffix == ".zip":
            packed = staging / final.name
            with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
                for source, name in zip(sources, run_tests.UPLOAD):
                    archive.write(source, name)
            os.replace(packed, final)
        else:
            for source, name in zip(sources, run_tests.UPLOAD):
                shutil.copyfile(source, staging / name)
            staging.chmod(0o755)  # mkdtemp makes it private
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="the checkpoint train_model saved, e.g. "
                                           "segmentation_model-1.pth (its record beside it)")
    parser.add_argument("--data", default=str(run_tests.ROOT / "public_data"),
                        help="the course's data: its train/ is what the model must come from "
                             "(default: public_data/ of the package)")
    parser.add_argument("--out", default="upload",
                        help="a new folder for the two files, or NAME.zip (default: upload)")
    parser.add_argument(REFERENCE_FLAG, dest="dry_run", action="store_true",
                        help="pack the package's reference model anyway, to try the command "
                             "(never upload it)")
    args = parser.parse_args(argv)
    checkpoint, data = Path(args.checkpoint), Path(args.data)
    train = data / "train"
    try:
        sources = run_tests.upload_sources(run_tests.ROOT, checkpoint)
        if not (train / "images").is_dir() or not (train / "gt").is_dir():
            raise DataError(f"{train}: no train/images and train/gt there: give the course's data "
                            "folder with --data (the one that holds train/ and test/)")
        what = check_record(checkpoint, train, args.dry_run)
        photo = sample_photo(data)
        with tempfile.TemporaryDirectory() as tmp:
            env = run_tests.run_as_grader(sources, [(photo, Path(tmp) / "mask.png")])
        final = write_upload(sources, Path(args.out))
    except UploadRefused as error:
        print(f"not prepared: {error}", file=sys.stderr)
        return 1
    except run_tests.UploadError as error:
        print(f"not prepared: the grader would fail: {error}", file=sys.stderr)
        return 1
    except (DataError, FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model: {what}")
    print(f"checked in a clean folder as the grader runs it (Python {env['python']}, torch "
          f"{env['torch']}): loads strictly into get_model(), predict gives a mask of "
          f"{shown_path(photo)}'s size")
    print(f"upload: {final} holds {' and '.join(run_tests.UPLOAD)}"
          + (": a DRY RUN with the reference model, do not upload it" if args.dry_run else
             ": upload exactly these two files"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
