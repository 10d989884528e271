"""run_tests.py grades the two uploaded files alone, in a fresh interpreter, as the grader does;
every way an upload can fail there is named."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import run_tests
from conftest import CHECKPOINT, ROOT, make_dataset
from segmentation import get_model, predict
from tools.checkpoint import load_model

EXAMPLES = ROOT / "examples"


@pytest.fixture
def project(tmp_path):
    """A copy of the two uploaded files in a folder of their own, and a two-image test split."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "segmentation.py", folder)
    torch.save(get_model().state_dict(), folder / "segmentation_model.pth")
    data = make_dataset(tmp_path / "data" / "test", classes=("a",), per_class=2).parent
    return folder, data


def _prepend(path, line):
    """Add an import line among segmentation.py's own (after `from __future__`)."""
    text = path.read_text()
    path.write_text(text.replace("import numpy as np\n", f"import numpy as np\n{line}\n", 1))


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="no shipped segmentation_model.pth")
def test_shipped_upload_grades_as_in_process_on_the_examples():
    graded = run_tests.grade_upload(EXAMPLES)
    model = load_model(CHECKPOINT)
    in_process = run_tests.evaluate(lambda path: predict(model, path), EXAMPLES)
    assert len(graded["records"]) == 12
    assert [r["image"] for r in graded["records"]] == [r["image"] for r in in_process["records"]]
    assert graded["mean_iou"] == pytest.approx(in_process["mean_iou"], abs=1e-3)
    assert graded["environment"]["torch"] == torch.__version__


def test_a_helper_module_of_the_project_is_named(project, capsys, monkeypatch):
    folder, data = project
    (folder / "helpers.py").write_text("SIZE = 288\n")
    _prepend(folder / "segmentation.py", "import helpers")
    assert "import helpers" in (folder / "segmentation.py").read_text()
    with pytest.raises(run_tests.UploadError, match="imports `helpers`, a file of your project"):
        run_tests.grade_upload(data, folder)
    monkeypatch.setattr(run_tests, "ROOT", folder)
    assert run_tests.main([str(data)]) == 2
    assert "upload rejected: segmentation.py imports `helpers`" in capsys.readouterr().err


def test_a_missing_dependency_is_named(project):
    folder, data = project
    _prepend(folder / "segmentation.py", "import not_installed_anywhere_xyz")
    with pytest.raises(run_tests.UploadError,
                       match="`not_installed_anywhere_xyz`, which this Python"):
        run_tests.grade_upload(data, folder)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="needs sys.stdlib_module_names")
def test_a_dependency_the_grader_lacks_is_named_even_when_installed_here(project):
    folder, data = project
    _prepend(folder / "segmentation.py", "import pytest")  # installed here, not in the grader
    with pytest.raises(run_tests.UploadError,
                       match="imports pytest, which the grader does not have"):
        run_tests.grade_upload(data, folder)


def test_a_pickled_model_is_named(project):
    folder, data = project
    torch.save(get_model(), folder / "segmentation_model.pth")
    with pytest.raises(run_tests.UploadError, match="pickled .*object.* not a state_dict"):
        run_tests.grade_upload(data, folder)


def test_keys_or_shapes_that_do_not_fit_are_named(project):
    folder, data = project
    state = get_model().state_dict()
    state.pop("head.bias")
    state["head.weight"] = torch.zeros(2, 16, 1, 1)
    torch.save(state, folder / "segmentation_model.pth")
    with pytest.raises(run_tests.UploadError, match="does not fit get_model()") as info:
        run_tests.grade_upload(data, folder)
    assert "head.bias" in str(info.value)


def test_a_predict_of_the_wrong_shape_is_named(project):
    folder, data = project
    with open(folder / "segmentation.py", "a") as file:
        file.write("\ndef predict(model, img_path):\n    return np.zeros((5, 5), np.float32)\n")
    with pytest.raises(run_tests.UploadError, match=r"predict returned \(5, 5\), expected"):
        run_tests.grade_upload(data, folder)


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="no shipped segmentation_model.pth")
def test_no_argument_grades_the_examples_without_course_data(capsys, monkeypatch, tmp_path):
    empty = tmp_path / "project"
    (empty / "public_data").mkdir(parents=True)
    (empty / "tests").mkdir()
    shutil.copytree(EXAMPLES, empty / "examples")
    for name in ("segmentation.py", "segmentation_model.pth"):
        shutil.copy(ROOT / name, empty)
    monkeypatch.setattr(run_tests, "ROOT", empty)
    assert run_tests.main([]) == 0
    printed = capsys.readouterr().out
    assert "grading on the bundled examples/" in printed
    assert "12 images," in printed
    # The course's test folder dropped into tests/ is graded instead.
    course = empty / "tests" / "00_test_val_input" / "test"
    course.mkdir(parents=True)
    shutil.copytree(EXAMPLES / "test" / "images" / "pets.Bengal", course / "images" / "pets.Bengal")
    shutil.copytree(EXAMPLES / "test" / "gt" / "pets.Bengal",
                    empty / "tests" / "00_test_val_gt" / "pets.Bengal")
    assert run_tests.main([]) == 0
    printed = capsys.readouterr().out
    assert "the course's data in tests/" in printed and "4 images," in printed


def test_examples_are_small_and_licensed():
    files = [p for p in EXAMPLES.rglob("*") if p.is_file()]
    images = [p for p in files if p.suffix == ".jpg"]
    assert len(images) == 12
    gt = EXAMPLES / "test" / "gt"
    assert all((gt / p.parent.name / f"{p.stem}.png").exists() for p in images)
    assert sum(p.stat().st_size for p in files) < 2 * 2**20
    assert "CC BY-SA 4.0" in (EXAMPLES / "README.md").read_text()


def test_grader_env_skips_without_python_39(tmp_path):
    """Where no Python 3.9 can be found, the check says so and passes: nothing to check against."""
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "grader_env.sh", tmp_path / "tools")
    result = subprocess.run(["bash", str(tmp_path / "tools" / "grader_env.sh")],
                            env={"PATH": "/usr/bin:/bin", "GRADER_PYTHON": str(tmp_path / "none")},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "SKIPPED, no Python 3.9 found" in result.stdout
    assert not (tmp_path / ".grader-venv").exists()


@pytest.mark.parametrize("kind, words", [("text", "not a PyTorch checkpoint"),
                                         ("truncated", "damaged or incomplete"),
                                         ("state", "are not tensors (a training state?)")])
def test_a_broken_checkpoint_is_named_for_what_it_is(project, kind, words):
    folder, data = project
    from test_checkpoint import _broken_checkpoints  # the same broken files as the loader's test
    (folder.parent / "broken").mkdir()
    broken = _broken_checkpoints(folder.parent / "broken")[kind]
    shutil.copy(broken, folder / "segmentation_model.pth")
    with pytest.raises(run_tests.UploadError) as info:
        run_tests.grade_upload(data, folder)
    message = str(info.value)
    assert words in message and "pickled" not in message and "weights_only" not in message


@pytest.mark.parametrize("layout, words", [
    ("train_only", "it holds train/ but no test/"),
    ("nested", "public_data/public_data has one, one level deeper")])
def test_an_incomplete_public_data_is_diagnosed_not_replaced_by_the_examples(
        tmp_path, capsys, monkeypatch, layout, words):
    project = tmp_path / "project"
    public = project / "public_data"
    (project / "tests").mkdir(parents=True)
    shutil.copytree(EXAMPLES, project / "examples")
    if layout == "train_only":
        make_dataset(public / "train")
    else:
        make_dataset(public / "public_data" / "test")
    monkeypatch.setattr(run_tests, "ROOT", project)
    assert run_tests.main([]) == 1
    captured = capsys.readouterr()
    assert words in captured.err and "examples" not in captured.out


def test_grader_env_finds_any_pyenv_39(tmp_path):
    """Not only 3.9.18: the newest 3.9.x that pyenv has is used through its shim."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pyenv").write_text("#!/bin/sh\nprintf '3.8.10\\n3.9.2\\n3.9.7\\n3.11.7\\n'\n")
    # A pyenv shim: python3.9 runs only with a 3.9 version named, and says which one it is.
    (bin_dir / "python3.9").write_text(
        '#!/bin/sh\ncase "$PYENV_VERSION" in 3.9.*) ;; *) exit 127;; esac\n'
        'case "$*" in *print*) echo "/pyenv/versions/$PYENV_VERSION/bin/python3.9";; esac\n')
    for tool in ("pyenv", "python3.9"):
        (bin_dir / tool).chmod(0o755)
    result = subprocess.run(["bash", str(ROOT / "tools" / "grader_env.sh"), "--find-python"],
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "/pyenv/versions/3.9.7/bin/python3.9"
