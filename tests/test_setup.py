"""tools/setup.sh: the PyTorch build that fits the machine is installed first, before anything else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SETUP = ROOT / "tools" / "setup.sh"


def _dry_run(tmp_path: Path, *args: str, gpu: bool = False) -> subprocess.CompletedProcess:
    """setup.sh --dry-run with a PATH that has (or lacks) an nvidia-smi that lists a GPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "uname", "head", "sed", "dirname"):
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
    return [line for line in result.stdout.splitlines() if line.startswith("+ ") and "install" in line]


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
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


def test_readme_installs_the_fitting_build_before_anything_else():
    commands = _readme_commands()
    assert commands[0] == "bash tools/setup.sh"
    assert not any("pip install" in c for c in commands[:1])


def test_readme_training_command_keeps_the_shipped_checkpoint():
    train = [c for c in _readme_commands() if "segmentation.py train" in c]
    assert train and not any("--overwrite" in c for c in train)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "git checkout segmentation_model.pth" in text


def test_readme_quick_test_command_leaves_the_slow_tests_out():
    assert '.venv/bin/python -m pytest -q -m "not slow" tests' in _readme_commands()
