"""run_tests.py must grade exactly as the course does: checked against an independent IoU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import run_tests
from conftest import make_dataset
from segmentation import DataError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def graded(tmp_path):
    """A test folder of hand-made masks, and 'predictions' that are known probability maps."""
    rng = np.random.default_rng(0)
    truths, probs = {}, {}
    for cls, name, shape in [("a", "x", (20, 30)), ("a", "y", (25, 25)), ("b", "z", (40, 10))]:
        truth = rng.random(shape) > 0.6
        prob = np.clip(truth * 0.7 + rng.random(shape) * 0.5, 0, 1).astype(np.float32)
        _write(tmp_path / "test" / "images" / cls / f"{name}.jpg", np.zeros(shape + (3,), np.uint8))
        _write(tmp_path / "test" / "gt" / cls / f"{name}.png", truth.astype(np.uint8) * 255)
        truths[f"{cls}/{name}"], probs[f"{cls}/{name}"] = truth, prob
    def predict_fn(path):
        parts = path.replace("\\", "/").split("/")
        return probs[f"{parts[-2]}/{parts[-1][:-4]}"]
    return tmp_path, truths, probs, predict_fn


def test_agrees_with_an_independent_iou(graded):
    root, truths, probs, predict_fn = graded
    result = run_tests.evaluate(predict_fn, root)
    expected = {}
    for key, truth in truths.items():
        pred = probs[key] > 0.5
        expected[key] = (pred & truth).sum() / (pred | truth).sum()
    got = {r["image"]: r["iou"] for r in result["records"]}
    assert got == pytest.approx(expected)
    assert result["mean_iou"] == pytest.approx(np.mean(list(expected.values())))
    assert result["per_class"]["b"] == pytest.approx(expected["b/z"])


def test_course_layout(graded, tmp_path):
    """00_test_val_input/test/images/<class>/ with 00_test_val_gt/<class>/ grades the same."""
    root, _, _, predict_fn = graded

    def scores(data):  # each image's scores, without where its files lie
        return [{k: v for k, v in r.items() if k not in ("photo", "truth")}
                for r in run_tests.evaluate(predict_fn, data)["records"]]
    expected = scores(root)
    course = tmp_path / "course"
    (course / "00_test_val_input" / "test").mkdir(parents=True)
    shutil.move(str(root / "test" / "images"),
                str(course / "00_test_val_input" / "test" / "images"))
    shutil.move(str(root / "test" / "gt"), str(course / "00_test_val_gt"))
    assert scores(course) == expected


def test_both_empty_counts_as_one(tmp_path):
    _write(tmp_path / "test" / "images" / "a" / "e.jpg", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "test" / "gt" / "a" / "e.png", np.zeros((8, 8), np.uint8))
    result = run_tests.evaluate(lambda p: np.zeros((8, 8), np.float32), tmp_path)
    assert result["mean_iou"] == 1.0


def test_problems_reported_precisely(graded):
    root, _, _, predict_fn = graded
    (root / "test" / "gt" / "a" / "x.png").unlink()                      # missing ground truth
    _write(root / "test" / "gt" / "b" / "extra.png", np.zeros((4, 4), np.uint8))  # no image
    _write(root / "test" / "gt" / "a" / "y.png", np.zeros((5, 5), np.uint8))      # wrong size
    with pytest.raises(DataError) as info:
        run_tests.evaluate(predict_fn, root)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "a/x.jpg: no ground truth" in message
    assert "b/extra.png: ground truth without an image" in message
    assert "a/y.png: ground truth is 5x5" in message


def test_wrong_prediction_shape_is_an_error(graded):
    root, _, _, _ = graded
    with pytest.raises(ValueError, match="expected an array of shape"):
        run_tests.evaluate(lambda p: np.zeros((3, 3), np.float32), root)


@pytest.mark.parametrize("iou, mark", [(0.9, 10), (0.85, 10), (0.849, 9), (0.75, 8), (0.65, 6),
                                       (0.2, 2), (0.19, 0)])
def test_marks(iou, mark):
    assert run_tests.marks_for(iou) == mark


def _split(root, classes=("a",)):
    """root/test/{images,gt}/<class>/ with two pairs a class."""
    make_dataset(root / "test", classes=classes, per_class=2)
    return root


@pytest.mark.parametrize("case, words", [
    ("typo", "no such folder (the nearest that exists"),
    ("no_gt", "found {root}/test, but not {root}/test/gt"),
    ("split_itself", "it is a split, not the data folder; give the folder above it"),
    ("nested", "but {root}/course has one, one level deeper"),
    ("train_only", "it holds train/ but no test/"),
    ("a_file", "a file, not a folder"),
    ("empty_gt", "no masks in <class>/<name>.png subfolders"),
])
def test_each_wrong_layout_says_what_is_there_and_what_is_missing(tmp_path, case, words):
    root = tmp_path / "data"
    given = root
    if case == "typo":
        _split(root)
        given = tmp_path / "dta"
    elif case == "no_gt":
        shutil.rmtree(_split(root) / "test" / "gt")
    elif case == "split_itself":
        given = _split(root) / "test"
    elif case == "nested":
        _split(root / "course")
    elif case == "train_only":
        make_dataset(root / "train")
    elif case == "a_file":
        root.mkdir()
        given = root / "notes.txt"
        given.write_text("x")
    elif case == "empty_gt":
        for png in (_split(root) / "test" / "gt").rglob("*.png"):
            png.unlink()
    with pytest.raises(DataError) as info:
        run_tests.find_test_folders(given)
    assert words.format(root=root) in str(info.value)


def test_outputs_of_predict_among_the_photos_are_skipped_and_named(graded, capsys):
    """`tools/predict.py --overlay` run inside test/images/<class>/ leaves X.mask.png and
    X.overlay.png there; grading skips them instead of asking for their ground truth."""
    root, truths, probs, predict_fn = graded
    expected = run_tests.evaluate(predict_fn, root)["mean_iou"]
    for name in ("x.mask.png", "x.overlay.png", "x.mask-1.png"):
        _write(root / "test" / "images" / "a" / name, np.zeros((20, 30, 3), np.uint8))
    assert run_tests.evaluate(predict_fn, root)["mean_iou"] == expected
    skipped = run_tests.skipped_outputs(root / "test" / "images")
    assert sorted(p.name for p in skipped) == ["x.mask-1.png", "x.mask.png", "x.overlay.png"]


def test_an_unreadable_test_photo_is_the_datas_fault_not_the_uploads(tmp_path, capsys, monkeypatch):
    data = _split(tmp_path / "data")
    fake = data / "test" / "images" / "a" / "000.jpg"
    fake.write_text("this is a text file")
    with pytest.raises(DataError, match="1 test photo\\(s\\) cannot be graded") as info:
        run_tests.grade_upload(data)
    assert str(fake) in str(info.value) and "cannot be read as an image" in str(info.value)
    assert run_tests.main([str(data)]) == 1
    err = capsys.readouterr().err
    assert "upload rejected" not in err and str(fake) in err


def test_help_lists_both_layouts_and_every_option_is_explained(capsys):
    with pytest.raises(SystemExit):
        run_tests.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "00_test_val_input/test/images/<class>/" in text and "00_test_val_gt/<class>/" in text
    assert "test/images/<class>/<name>.jpg" in text and "examples/" in text
    for option in ("--model", "--python", "--out", "--json", "--report", "--worst", "--overwrite"):
        assert option in text
    assert "(default: 24)" in text and "(default: segmentation_model.pth)" in text


# --- how sure the marks are: a bootstrap of the graded images --------------------------------

def test_how_sure_is_seeded_brackets_the_mean_and_shares_out_every_resample():
    ious = np.clip(np.random.default_rng(1).normal(0.78, 0.15, 300), 0, 1)
    sure = run_tests.how_sure(ious)
    assert sure == run_tests.how_sure(ious)  # seeded: every run says the same
    assert sure["low"] < ious.mean() < sure["high"]
    assert sum(sure["chances"].values()) == pytest.approx(1.0)
    assert list(sure["chances"]) == sorted(sure["chances"], reverse=True)
    assert run_tests.marks_for(ious.mean()) in sure["chances"]
    wider = run_tests.how_sure(ious[:30])  # fewer images, less sure
    assert wider["high"] - wider["low"] > sure["high"] - sure["low"]


def test_how_sure_of_one_score_is_one_band_and_of_a_mean_on_a_threshold_two():
    alike = run_tests.how_sure([0.9] * 40)
    assert alike["low"] == alike["high"] == pytest.approx(0.9) and alike["chances"] == {10: 1.0}
    split = run_tests.how_sure([0.7, 0.9] * 100)  # mean 0.80: the 9-marks threshold
    assert set(split["chances"]) == {9, 8} and 0.35 < split["chances"][9] < 0.65


def test_how_sure_is_said_next_to_the_marks_and_changes_neither_them_nor_the_exit(
        tmp_path, capsys):
    data = _split(tmp_path / "data")
    out = tmp_path / "grade.json"
    assert run_tests.main([str(data), "--json", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    marks = next(i for i, line in enumerate(printed) if line.startswith("marks "))
    assert printed[marks + 1].startswith("how sure: a hidden sample of ")
    saved = json.loads(out.read_text())
    assert saved["marks"] == run_tests.marks_for(saved["mean_iou"])
    assert printed[marks] == f"marks {saved['marks']}/10"
    assert saved["how_sure"]["words"] == printed[marks + 1]
    assert saved["how_sure"]["low"] <= saved["mean_iou"] <= saved["how_sure"]["high"]
