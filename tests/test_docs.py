"""The pages a student reads: every command in the README names a script that is there and runs
(its --help), and every link in the README, docs/, lab/ and the examples resolves, headings too.
The prose itself is free to change: no test reads its sentences."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_setup import _readme_commands

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "lab" / "README.md",
         ROOT / "lab" / "NOTES.md", ROOT / "examples" / "README.md",
         ROOT / "public_data" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _scripts() -> list:
    """The scripts the README's commands run, as (command, script path)."""
    found = []
    for command in _readme_commands():
        scripts = [word for word in command.split() if word.endswith((".py", ".sh"))]
        if scripts:
            found.append((command, ROOT / scripts[0]))
    return found


def test_the_readme_walks_the_students_path_in_order():
    commands = _readme_commands()
    steps = ["tools/setup.sh", "run_tests.py", "segmentation.py train", "run_tests.py --model",
             "tools/grader_env.sh", "tools/prepare_upload.py"]
    where = [next(i for i, c in enumerate(commands) if step in c) for step in steps]
    assert where == sorted(where), commands


@pytest.mark.parametrize("command, script", _scripts(), ids=lambda v: str(v)[:40])
def test_every_readme_command_names_a_script_that_is_there(command, script):
    assert script.is_file(), f"{command}: {script} not found"


@pytest.mark.parametrize("script, argv", [
    ("run_tests.py", ["--help"]), ("segmentation.py", ["train", "--help"]),
    ("tools/predict.py", ["--help"]), ("tools/prepare_upload.py", ["--help"])])
def test_the_readmes_python_commands_run(script, argv, monkeypatch, capsys):
    """Each runs as `python SCRIPT --help` would (in this process: torch is loaded already)."""
    assert any(script in command for command in _readme_commands())
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *argv])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert stop.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _anchor(heading: str) -> str:
    """A markdown heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set:
    return {_anchor(line.lstrip("#")) for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: {file} not found")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(broken)


def test_the_readme_is_a_one_minute_page():
    """At most 100 lines, the first command within the first 25."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 100
    assert lines.index("```bash") < 25
