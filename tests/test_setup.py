"""tools/setup.sh: the PyTorch build that fits the machine is installed first, before anything
else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SETUP = ROOT / "tools" / "setup.sh"


def _dry_run(tmp_path: Path, *args: str, gpu: bool = False) -> subprocess.CompletedProcess:
    """setup.sh --dry-run with a PATH that has (or lacks) an nvidia-smi that lists a GPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "uname", "head", "sed", "dirname", "python3"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    smi = bin_dir / "nvidia-smi"
    if gpu:
        smi.write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-0)'\n")
        smi.chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir)}
    return subprocess.run([str(bin_dir / "bash"), str(SETUP), "--dry-run", *args],
                          capture_output=True, text=True, env=env)


def _installs(result: subprocess.CompletedProcess):
    return [line for line in result.stdout.splitlines()
            if line.startswith("+ ") and "install" in line]


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="the CPU-only choice is Linux's")
def test_without_an_nvidia_gpu_the_cpu_build_comes_first(tmp_path):
    result = _dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    installs = [line for line in _installs(result) if "--upgrade pip" not in line]
    assert "torch torchvision --index-url https://download.pytorch.org/whl/cpu" in installs[0]
    assert installs[1].endswith("-r requirements-dev.txt") and len(installs) == 2
    assert "CPU-only (no NVIDIA GPU found" in result.stdout


def test_with_an_nvidia_gpu_the_ordinary_build(tmp_path):
    result = _dry_run(tmp_path, gpu=True)
    assert result.returncode == 0, result.stderr
    assert not any("whl/cpu" in line for line in _installs(result))
    assert "Tesla T4" in result.stdout


def test_the_choice_can_be_forced_and_a_typo_is_refused(tmp_path):
    forced = _dry_run(tmp_path, "--cpu", gpu=True)
    assert any("whl/cpu" in line for line in _installs(forced))
    typo = _dry_run(tmp_path, "--cuda")
    assert typo.returncode == 2 and "unknown option --cuda" in typo.stderr


def test_skip_reasons_speak_to_a_student(tmp_path):
    from conftest import SHARED_DATA, needs_shared
    reason = needs_shared(tmp_path / "absent").kwargs["reason"]
    assert "not part of the package" in reason and "a student does not need" in reason
    assert "beside the project" not in reason
    assert "stand-in data set" in needs_shared(SHARED_DATA).kwargs["reason"]


def _readme_commands() -> list:
    """The command lines of the README's bash blocks, in order."""
    import re
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


def test_readme_installs_the_fitting_build_before_anything_else():
    commands = _readme_commands()
    assert commands[0] == "bash tools/setup.sh"
    assert not any("pip install" in c for c in commands[:1])


def test_readme_training_command_keeps_the_shipped_checkpoint():
    train = [c for c in _readme_commands() if "segmentation.py train" in c]
    assert train and not any("--overwrite" in c for c in train)


def test_readme_quick_test_command_leaves_the_slow_tests_out():
    assert '.venv/bin/python -m pytest -q -m "not slow" tests' in _readme_commands()


# --- the real run, with fake installers: the check, the fallback, an existing .venv ----------

FAKE_PYTHON = r"""#!/bin/bash
# A stand-in for python3 and the venv's python: logs each call, "installs" by writing the build
# into $FAKE_STATE, and answers the index probe and tools/check_env.py as $FAKE_* say.
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip")
    if [[ "$*" == *"uninstall"* ]]; then : > "$FAKE_STATE"
    elif [[ "$*" == *"--index-url"* ]]; then
      [ "$FAKE_CPU_INSTALL" = ok ] || exit 1; echo cpu > "$FAKE_STATE"
    elif [[ "$*" == *"requirements-dev.txt"* ]] && [ ! -s "$FAKE_STATE" ]; then
      echo ordinary > "$FAKE_STATE"
    fi ;;
  "-c "*) [ "$FAKE_INDEX" = up ] ;;
  "tools/check_env.py ")
    build=$(cat "$FAKE_STATE" 2>/dev/null)
    if { [ "$build" = cpu ] && [ "$FAKE_CPU_WORKS" = yes ]; } ||
       { [ "$build" = ordinary ] && [ "$FAKE_ORDINARY_WORKS" = yes ]; }; then
      echo "works: torch 2.0-$build, torchvision 0.15-$build, CPU"
    else
      echo "does not work: torchvision 0.15-$build does not load with torch 2.0-$build" \
        "(its operator torchvision::nms is missing)" >&2
      exit 1
    fi ;;
esac
"""


def _bin(tmp_path: Path) -> Path:
    """A PATH folder with the few tools setup.sh uses and the fake python, and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "uname", "head", "sed", "dirname", "mkdir", "cp", "cat"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    fake = bin_dir / "fake-python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return bin_dir


def _setup(tmp_path: Path, *args: str, index="up", cpu_install="ok", cpu_works="yes",
           ordinary_works="yes", venv_exists=False) -> tuple:
    """Run setup.sh (not a dry run) with fake installers; returns (result, the calls they saw)."""
    bin_dir = _bin(tmp_path)
    fake = bin_dir / "fake-python3"
    venv, log, state = tmp_path / "venv", tmp_path / "calls.log", tmp_path / "state"
    if venv_exists:
        (venv / "bin").mkdir(parents=True)
        shutil.copy(fake, venv / "bin" / "python")
        state.write_text("ordinary\n")
    env = {"PATH": str(bin_dir), "PYTHON": str(fake), "VENV": str(venv), "FAKE_LOG": str(log),
           "FAKE_STATE": str(state), "FAKE_INDEX": index, "FAKE_CPU_INSTALL": cpu_install,
           "FAKE_CPU_WORKS": cpu_works, "FAKE_ORDINARY_WORKS": ordinary_works}
    result = subprocess.run([str(bin_dir / "bash"), str(SETUP), *args], capture_output=True,
                            text=True, env=env)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_the_cpu_build_is_checked_before_done(tmp_path):
    result, calls = _setup(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "done: " in result.stdout
    assert "works: torch 2.0-cpu, torchvision 0.15-cpu" in result.stdout
    assert calls[-1] == "tools/check_env.py" and "tools/check_env.py" in calls[-3]
    assert not any("uninstall" in c for c in calls)


def test_an_index_that_does_not_answer_falls_back_to_the_ordinary_build_at_once(tmp_path):
    result, calls = _setup(tmp_path, index="down")
    assert result.returncode == 0, result.stderr
    assert not any("--index-url" in c or "uninstall" in c for c in calls)  # no pip retrying
    fallback = [line for line in result.stdout.splitlines()
                if line.startswith("The CPU-only build")]
    assert fallback == ["The CPU-only build cannot be had (its index https://download.pytorch.org"
                        "/whl/cpu did not answer within 10 s): installing the ordinary build "
                        "instead (5.8 GB on Linux)"]
    assert "works: torch 2.0-ordinary" in result.stdout


def test_a_cpu_build_that_fails_the_check_is_replaced_by_the_ordinary_one(tmp_path):
    result, calls = _setup(tmp_path, cpu_works="no")
    assert result.returncode == 0, result.stderr
    assert ("(it does not work: torchvision 0.15-cpu does not load with torch 2.0-cpu"
            in result.stdout)
    uninstall = next(i for i, c in enumerate(calls) if "uninstall" in c)
    assert "torch torchvision" in calls[uninstall]
    assert "requirements-dev.txt" in calls[uninstall + 1]
    assert [c for c in calls if "uninstall" in c] == [calls[uninstall]]
    assert "done: " in result.stdout and "torch 2.0-ordinary" in result.stdout


def test_when_both_builds_fail_it_exits_with_one_line_naming_both_versions(tmp_path):
    result, _ = _setup(tmp_path, cpu_install="fail", ordinary_works="no")
    assert result.returncode == 1 and "done" not in result.stdout
    assert "(pip could not install it from" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "torchvision 0.15-ordinary does not load with torch 2.0-ordinary" in lines[0]
    assert "--force-reinstall torch torchvision" in lines[0] and "rm -rf" in lines[0]


@pytest.mark.parametrize("works", [True, False])
def test_an_existing_venv_is_kept_checked_and_the_rebuild_said(tmp_path, works):
    result, calls = _setup(tmp_path, venv_exists=True, ordinary_works="yes" if works else "no")
    assert not any("pip" in c or "venv" in c.split()[:2] for c in calls)  # nothing installed
    assert calls == ["tools/check_env.py"]
    said = (result.stdout if works else result.stderr).strip().splitlines()
    assert result.returncode == (0 if works else 1) and len(said) == 1
    assert "exists and is kept" in said[0]
    assert f"rm -rf {tmp_path / 'venv'} && bash tools/setup.sh" in said[0]


def test_without_python_one_line(tmp_path):
    bin_dir = _bin(tmp_path)  # no python3 on this PATH
    missing = subprocess.run([str(bin_dir / "bash"), str(SETUP)], capture_output=True, text=True,
                             env={"PATH": str(bin_dir), "VENV": str(tmp_path / "v2")})
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "python3 not found" in missing.stderr and not (tmp_path / "v2").exists()


# --- a torchvision that does not load with torch: one line, not a traceback ------------------

def _broken_torchvision(tmp_path: Path) -> dict:
    """An environment whose torchvision fails at import as a mismatched build does."""
    site = tmp_path / "broken-site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    info = site / "torchvision-0.28.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
    return {**os.environ, "PYTHONPATH": str(site)}


@pytest.mark.parametrize("command", [["segmentation.py", "train", "public_data/train"],
                                     ["run_tests.py"], ["tools/prepare_upload.py", "x.pth"],
                                     ["tools/check_env.py"]])
def test_a_mismatched_torchvision_is_named_in_one_line(tmp_path, command):
    import torch
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                            env=_broken_torchvision(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert (f"torchvision does not load with torch {torch.__version__} (operator "
            "torchvision::nms does not exist)") in lines[0]
    assert "bash tools/setup.sh" in lines[0]


def test_the_graders_import_fails_with_the_same_line(tmp_path):
    code = "from segmentation import predict, get_model"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=_broken_torchvision(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "ImportError: torchvision does not load with torch")


def test_the_notebooks_first_code_cell_names_it_in_one_line(tmp_path):
    import json
    cells = json.loads((ROOT / "notebooks" / "train.ipynb").read_text())["cells"]
    imports = next(c for c in cells if "import segmentation" in "".join(c["source"]))
    result = subprocess.run([sys.executable, "-c", "".join(imports["source"])],
                            cwd=ROOT / "notebooks", capture_output=True, text=True,
                            env=_broken_torchvision(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "torchvision does not load with torch" in result.stderr
