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
