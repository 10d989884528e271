"""Reading checkpoints and their training records: what run_tests.py, tools/predict.py and
tools/prepare_upload.py tell a student about a model file, each kind of broken file in its own
words, and whether the model was trained on the course's data (the course's rule).

The grader itself only does `model.load_state_dict(torch.load(path, map_location="cpu"))`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from segmentation import (DEFAULT_CHECKPOINT, RECORD_FORMAT, RECORD_VERSION, DataError,  # noqa: E402
                          UNet, data_fingerprint, file_sha256, get_model, record_path)


def short_message(text: str, limit: int = 300) -> str:
    """`text` on one line, without terminal colour codes, cut at a word boundary within `limit`."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text)).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


SAVE_ADVICE = "save the weights with torch.save(model.state_dict(), PATH)"


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """The state_dict in checkpoint file `path`, or a ValueError that says what the file is instead.

    Loads tensors only where this torch can refuse other objects (weights_only, torch >= 1.13):
    a checkpoint is never a reason to run code. Each kind of broken file gets its own message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with open(path, "rb") as file:
        head = file.read(16)
    if not head:
        raise ValueError(f"{path}: the file is empty")
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: damaged or incomplete (a zip archive without its end, "
                             f"{path.stat().st_size} bytes): copy the file again")
    elif not head.startswith(b"\x80"):  # neither a zip nor a pickle: not from torch.save
        raise ValueError(f"{path}: not a PyTorch checkpoint (it begins {head[:12]!r}); "
                         + SAVE_ADVICE)
    has_safe = "weights_only" in inspect.signature(torch.load).parameters
    safe = {"weights_only": True} if has_safe else {}
    try:
        state = torch.load(path, map_location="cpu", **safe)
    except Exception as error:
        if "weights_only" not in str(error) and "Unsupported global" not in str(error):
            raise ValueError(f"{path}: torch.load cannot read it (damaged?): "
                             f"{short_message(error)}") from None
        # Objects other than tensors, refused unrun: most often a whole pickled model.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(f"{path}: holds a pickled Python object{what}, e.g. a whole model, not "
                         f"a state_dict; {SAVE_ADVICE}") from None
    if not isinstance(state, dict):
        what = ("a pickled model object" if isinstance(state, nn.Module)
                else f"a {type(state).__name__}")
        raise ValueError(f"{path}: holds {what}, not a state_dict; {SAVE_ADVICE}")
    others = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise ValueError(f"{path}: a dict whose entries {', '.join(map(str, others[:4]))} are not "
                         f"tensors (a training state?), not a state_dict; {SAVE_ADVICE}")
    return state


def check_fits(model: nn.Module, state: Dict[str, torch.Tensor], path) -> None:
    """ValueError naming the keys and shapes of `state` that do not fit `model` (strict loading)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} (the model's {list(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for label, keys in (("missing keys:", missing), ("unexpected keys:", extra),
                                    ("other shapes:", shapes)) if keys]
    if problems:
        raise ValueError(f"{path}: does not fit get_model(): " + "; ".join(problems))


def load_model(checkpoint=DEFAULT_CHECKPOINT) -> UNet:
    """get_model() with a checkpoint loaded strictly, as the grader loads it; in eval mode."""
    state = read_state_dict(checkpoint)
    model = get_model()
    check_fits(model, state, checkpoint)
    model.load_state_dict(state)
    return model.eval()


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


def shown_path(path) -> str:
    """`path` as the student would type it from where the command ran: relative, never absolute
    (a report is shared, and an absolute path says where a home folder is)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # Windows: another drive has no relative path
        return Path(path).name
