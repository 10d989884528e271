"""The course's rule: the uploaded model is one that train_model made from the course's data.
Training records beside checkpoints, run_tests.py's word on which model it grades, and the
command that prepares the upload."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import run_tests
import segmentation
from lab.seeds import RETIRED
from tools import checkpoint as records
from conftest import CHECKPOINT, ROOT, make_dataset
from segmentation import (data_fingerprint, file_sha256, get_model, record_path, save_checkpoint,
                          train_model)

SIZE = 64  # tiny images keep the trainings to seconds
PREPARE = ROOT / "tools" / "prepare_upload.py"


@pytest.fixture
def course(tmp_path) -> Path:
    """A course-like data folder: train/ (2 classes x 3) and test/ (1 class x 2)."""
    data = tmp_path / "public_data"
    make_dataset(data / "train", per_class=3)
    make_dataset(data / "test", classes=("a",), per_class=2, seed=5)
    return data


def _train(data: Path, out: Path, **options):
    return train_model(data, epochs=1, encoder_weights=None, out_path=out, image_size=SIZE,
                       verbose=False, **options)


def _record_for(train: Path, **fields) -> dict:
    """A record as train_model writes it, for `train`, without a training."""
    return {"format": segmentation.RECORD_FORMAT, "version": segmentation.RECORD_VERSION,
            "reference": False, "trained_on": {"folder": str(train), **data_fingerprint(train)},
            "steps": 7, "seed": 0, "finished": "2026-12-03 10:00:00", **fields}


# --- the record train_model writes ------------------------------------------------------------

def test_training_writes_a_record_with_the_data_recipe_and_run(course, tmp_path):
    out = tmp_path / "models" / "segmentation_model.pth"
    _train(course / "train", out, seed=3, val_data_path=course / "test", lr=2e-3)
    record = json.loads(record_path(out).read_text())
    assert record_path(out).name == "segmentation_model.json"
    assert record["sha256"] == file_sha256(out) and record["checkpoint"] == out.name
    assert record["trained_on"]["folder"] == str(course / "train")
    assert record["trained_on"]["pairs"] == 6
    assert record["trained_on"]["classes"] == {"a": 3, "b": 3}
    assert record["trained_on"]["digest"] == data_fingerprint(course / "train")["digest"]
    assert record["recipe"]["lr"] == 2e-3 and record["recipe"]["image_size"] == SIZE
    assert record["seed"] == 3 and record["steps"] == 1 and record["reference"] is False
    assert record["validation"] == {"folder": str(course / "test"), "images": 2}
    assert record["val_iou"] is not None and record["final_loss"] > 0
    for key in ("device", "precision", "torch", "torchvision", "started", "finished"):
        assert record[key], key
    assert record["command"] == (f"python segmentation.py train {course / 'train'} --epochs 1 "
                                 f"--seed 3 --lr 0.002 --image-size {SIZE} "
                                 f"--val-data {course / 'test'}")
    assert record["options"] == {"epochs": 1, "seed": 3, "lr": 2e-3, "image_size": SIZE,
                                 "val_data_path": str(course / "test")}
    # Still a plain state_dict that the grader loads strictly.
    get_model().load_state_dict(torch.load(out, map_location="cpu"))


def test_the_command_of_a_timed_run_is_the_train_command_with_its_minutes(course, tmp_path):
    out = tmp_path / "m.pth"
    train_model(course / "train", minutes=0.01, encoder_weights=None, out_path=out,
                image_size=SIZE, verbose=False)
    record = json.loads(record_path(out).read_text())
    assert record["command"] == (f"python segmentation.py train {course / 'train'} "
                                 f"--minutes 0.01 --image-size {SIZE}")
    assert "schedule" not in record["recipe"] and record["steps"] >= 1


def test_the_fingerprint_follows_the_contents_not_the_place(course, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(course / "train", moved)
    assert data_fingerprint(moved) == data_fingerprint(course / "train")
    extra = make_dataset(tmp_path / "more", classes=("c",), per_class=1)
    shutil.copytree(extra / "images" / "c", moved / "images" / "c")
    shutil.copytree(extra / "gt" / "c", moved / "gt" / "c")
    assert data_fingerprint(moved)["digest"] != data_fingerprint(course / "train")["digest"]


def test_a_crash_while_saving_leaves_neither_file(tmp_path, monkeypatch):
    out = tmp_path / "segmentation_model.pth"

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(get_model(), out, {})
    assert sorted(tmp_path.iterdir()) == []


def test_the_record_is_in_place_before_the_checkpoint(tmp_path, monkeypatch):
    """Killed between the two renames: a record whose SHA-256 names no checkpoint, never a
    checkpoint without its record."""
    out = tmp_path / "segmentation_model.pth"
    real_replace, calls = segmentation.os.replace, []

    def killed_at_the_second(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)
    monkeypatch.setattr(segmentation.os, "replace", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(get_model(), out, {})
    assert calls == ["segmentation_model.json", "segmentation_model.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmentation_model.json"]


def test_records_are_kept_and_numbered_with_their_checkpoints(course, tmp_path):
    out = tmp_path / "segmentation_model.pth"
    _train(course / "train", out)
    first = record_path(out).read_text()
    _train(course / "train", out)
    assert record_path(out).read_text() == first  # the first run's record is untouched
    assert json.loads((tmp_path / "segmentation_model-1.json").read_text())["checkpoint"] == \
        "segmentation_model-1.pth"
    # A record left alone (its checkpoint deleted) still holds its number.
    (tmp_path / "segmentation_model-2.json").write_text("{}")
    _train(course / "train", out)
    assert (tmp_path / "segmentation_model-3.pth").exists()
    assert (tmp_path / "segmentation_model-3.json").exists()
    assert (tmp_path / "segmentation_model-2.json").read_text() == "{}"


# --- run_tests.py: which model it grades ------------------------------------------------------

def _checkpoint(folder: Path, record: dict = None, name: str = "segmentation_model.pth") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    if record is None:
        torch.save(get_model().state_dict(), out)
    else:
        save_checkpoint(get_model(), out, record)
    return out


def test_a_matching_record_is_named_without_a_warning(course, tmp_path):
    checkpoint = _checkpoint(tmp_path / "m", _record_for(course / "train"))
    model = records.describe_model(checkpoint, course)
    assert model["warning"] is None and model["trained_on_data"] is True
    assert model["lines"][0] == (f"model: trained on {course / 'train'} (6 pairs, 2026-12-03, "
                                 "7 steps, seed 0; record segmentation_model.json)")
    assert "matches" in model["lines"][1]


def test_a_record_of_other_data_is_warned_about(course, tmp_path):
    other = make_dataset(tmp_path / "other", per_class=2, seed=9)
    checkpoint = _checkpoint(tmp_path / "m", _record_for(other))
    model = records.describe_model(checkpoint, course)
    assert model["trained_on_data"] is False
    assert model["warning"].startswith("warning: this checkpoint was not trained on ")
    assert "its record says it was trained on other data" in model["warning"]
    assert records.RULE in model["warning"] and "python segmentation.py train" in model["warning"]


def test_no_record_is_said_and_warned_about(course, tmp_path):
    checkpoint = _checkpoint(tmp_path / "m")
    model = records.describe_model(checkpoint, course)
    assert "has no training record" in model["lines"][0]
    assert "(it has no training record)" in model["warning"]
    # Without a train/ split beside the test data there is nothing to compare: no warning.
    assert records.describe_model(checkpoint, course / "test")["warning"] is None


def test_a_renamed_checkpoint_finds_its_record_by_its_digest(course, tmp_path):
    trained = _checkpoint(tmp_path / "m", _record_for(course / "train"), "segmentation_model-1.pth")
    renamed = trained.with_name("segmentation_model.pth")
    trained.rename(renamed)
    record, where, notes = records.find_record(renamed)
    assert where.name == "segmentation_model-1.json" and record["trained_on"]["pairs"] == 6
    # Beside a record of another checkpoint, that one is named as not used.
    _checkpoint(tmp_path / "n", _record_for(course / "train"))
    shutil.copy(tmp_path / "n" / "segmentation_model.json", tmp_path / "m")
    record, where, notes = records.find_record(renamed)
    assert where.name == "segmentation_model-1.json"
    assert notes == ["segmentation_model.json is the record of another checkpoint (its SHA-256 "
                     "differs from segmentation_model.pth's): not used"]


@pytest.mark.parametrize("content, words", [
    ("{not json", "unreadable as a training record"),
    (json.dumps({"format": segmentation.RECORD_FORMAT, "version": 99}), "of another version (99;"),
    (json.dumps({"some": "other json"}), "not a training record of this package"),
    (json.dumps({"format": segmentation.RECORD_FORMAT, "version": segmentation.RECORD_VERSION,
                 "trained_on": {"pairs": "many"}, "steps": "?"}), "an incomplete training record"),
])
def test_a_bad_record_gets_one_line_and_the_grading_goes_on(course, tmp_path, content, words):
    checkpoint = _checkpoint(tmp_path / "m")
    record_path(checkpoint).write_text(content)
    model = records.describe_model(checkpoint, course)
    assert len(model["lines"]) == 2 and words in model["lines"][0]
    assert "has no training record" in model["lines"][1] and model["warning"]


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="no shipped segmentation_model.pth")
def test_the_shipped_checkpoint_is_the_reference_model_with_its_record():
    record, where, notes = records.find_record(CHECKPOINT)
    assert where == ROOT / "segmentation_model.json" and notes == []
    assert record["reference"] is True and "not on the course's" in record["note"]
    # Today's default recipe and length rule, and the length that rule gives for its data: its
    # command, run again, trains it again.
    recipe = {k: v for k, v in record["recipe"].items() if k != "schedule"}
    today = asdict(segmentation.Config())
    assert {k: v for k, v in recipe.items() if k in today} == {k: today[k] for k in recipe
                                                               if k in today}
    retired = {k: v for k, v in recipe.items() if k not in today}  # options since removed: off
    assert retired.items() <= RETIRED.items()
    assert record["seed"] == 0 and record["recipe"]["schedule"] == segmentation.SCHEDULE
    assert record["trained_on"]["pairs"] == 4972 and len(record["trained_on"]["classes"]) == 76
    assert record["trained_on"]["classes"]["cub.bird"] == 600  # the course's kind, 2026-12-06
    assert record["steps"] == segmentation.default_steps(record["trained_on"]["pairs"])[0]
    model = records.describe_model(CHECKPOINT, ROOT / "examples")
    assert model["reference"] and "the package's reference model" in model["lines"][0]


def test_run_tests_says_which_model_before_the_marks_and_exits_as_before(course, tmp_path,
                                                                           capsys, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "segmentation.py", project)
    _checkpoint(project)  # no record
    monkeypatch.setattr(run_tests, "ROOT", project)
    assert run_tests.main([str(course), "--report", str(tmp_path / "report"),
                           "--json", str(tmp_path / "grade.json")]) == 0
    printed = capsys.readouterr().out.splitlines()
    warning = next(i for i, line in enumerate(printed)
                   if line.startswith("warning: this checkpoint"))
    assert printed[warning - 1].startswith("model: segmentation_model.pth has no training record")
    assert printed[warning + 1].startswith("mean IoU") and printed[warning + 2].startswith("marks")
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'class="warning">warning: this checkpoint was not trained on' in page
    assert json.loads((tmp_path / "grade.json").read_text())["model"]["trained_on_data"] is None


# --- tools/prepare_upload.py --------------------------------------------------------------------

def _prepare(*args, cwd: Path) -> subprocess.CompletedProcess:
    """tools/prepare_upload.py with `args`, run in this process (its own grader check still
    runs in a fresh one) from folder `cwd`; its exit status and what it printed."""
    import os
    from tools import prepare_upload
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO
    out, err, here = StringIO(), StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = prepare_upload.main([str(a) for a in args])
            except SystemExit as stop:  # argparse
                code = stop.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_the_upload_is_prepared_checked_and_never_written_over(course, tmp_path):
    checkpoint = _checkpoint(tmp_path / "m", _record_for(course / "train"),
                             "segmentation_model-1.pth")
    done = _prepare(checkpoint, "--data", course, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model: trained on" in done.stdout and "loads strictly into get_model()" in done.stdout
    folder = tmp_path / "upload"
    assert sorted(p.name for p in folder.iterdir()) == ["segmentation.py", "segmentation_model.pth"]
    assert (folder / "segmentation_model.pth").read_bytes() == checkpoint.read_bytes()
    assert (folder / "segmentation.py").read_bytes() == (ROOT / "segmentation.py").read_bytes()
    again = _prepare(checkpoint, "--data", course, cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / "upload-1" / "segmentation_model.pth").exists()
    (tmp_path / "upload.zip").write_bytes(b"the student's own zip")
    zipped = _prepare(checkpoint, "--data", course, "--out", "upload.zip", cwd=tmp_path)
    assert zipped.returncode == 0
    assert (tmp_path / "upload.zip").read_bytes() == b"the student's own zip"
    with zipfile.ZipFile(tmp_path / "upload-1.zip") as archive:
        assert sorted(archive.namelist()) == ["segmentation.py", "segmentation_model.pth"]


def test_the_reference_model_is_refused_unless_a_dry_run_is_asked(course, tmp_path):
    reference = _checkpoint(tmp_path / "m", {**_record_for(course / "train"), "reference": True})
    refused = _prepare(reference, "--data", course, cwd=tmp_path)
    assert refused.returncode == 1 and not (tmp_path / "upload").exists()
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "is the package's reference model" in refused.stderr
    assert "python segmentation.py train" in refused.stderr
    assert "--dry-run-with-reference-model" in refused.stderr
    dry = _prepare(reference, "--data", course, "--dry-run-with-reference-model", cwd=tmp_path)
    assert dry.returncode == 0 and "DRY RUN" in dry.stdout and (tmp_path / "upload").is_dir()


@pytest.mark.parametrize("case", ["no record", "other data", "not strict", "no train"])
def test_an_upload_that_breaks_the_rule_or_the_grader_stops_with_one_line(course, tmp_path, case):
    record = _record_for(course / "train")
    if case == "other data":
        record = _record_for(make_dataset(tmp_path / "other", per_class=2, seed=9))
    checkpoint = _checkpoint(tmp_path / "m", None if case == "no record" else record)
    if case == "not strict":  # a matching record, but keys the grader's strict load refuses
        state = get_model().state_dict()
        state["extra.weight"] = torch.zeros(1)
        torch.save(state, checkpoint)
        record = {**record, "sha256": file_sha256(checkpoint)}
        record_path(checkpoint).write_text(json.dumps(record))
    data = course / "test" if case == "no train" else course
    result = _prepare(checkpoint, "--data", data, cwd=tmp_path)
    assert result.returncode == 1 and not (tmp_path / "upload").exists()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    expected = {"no record": "no training record", "other data": "pairs), not on",
                "not strict": "unexpected keys", "no train": "train: no train/images"}[case]
    assert expected in result.stderr
    assert str(checkpoint) in result.stderr or case == "no train"


# --- the README and CI -------------------------------------------------------------------

def test_ci_runs_the_readmes_first_command():
    from test_setup import _readme_commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[0] in [line.strip() for line in ci.splitlines()]
    assert "pip install" not in ci
