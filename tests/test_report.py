"""run_tests.py --report: a page a student opens from disk to see where the model fails."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pytest

import run_tests
from conftest import CHECKPOINT, ROOT
from tools import browser_check
from tools import report as report_page

EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.skipif(not CHECKPOINT.exists(), reason="no shipped segmentation_model.pth")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the bundled examples, graded once for this module: (folder, printed)."""
    folder = tmp_path_factory.mktemp("report") / "grading"
    out = tmp_path_factory.mktemp("stdout") / "printed.txt"
    with open(out, "w") as stream, contextlib.redirect_stdout(stream):
        assert run_tests.main([str(EXAMPLES), "--report", str(folder), "--worst", "5"]) == 0
    return folder, out.read_text()


def _links(page: Path):
    return re.findall(r'(?:src|href)="([^"#]+)"', page.read_text(encoding="utf-8"))


def test_every_link_and_image_of_the_page_is_on_disk(report):
    folder, printed = report
    page = folder / "index.html"
    assert f"report: {page}" in printed
    links = _links(page)
    assert len(links) >= 5 * 6  # 5 cards: 2 pictures, photo, overlay, prediction, ground truth
    missing = [link for link in links if not (folder / link).is_file()]
    assert not missing and not link_is_remote(links)
    assert not list(folder.glob(".*.tmp*")) and not list(folder.parent.glob(".grading.tmp-*"))


def link_is_remote(links):
    return [link for link in links if re.match(r"[a-z]+:", link)]


def test_page_states_the_grade_and_shows_the_worst_first(report):
    folder, printed = report
    html = (folder / "index.html").read_text(encoding="utf-8")
    mean = float(re.search(r"mean IoU (\d\.\d{4})", printed).group(1))
    marks = re.search(r"marks (\d+)/10", printed).group(1)
    assert f"<b>{marks}/10 marks</b>: mean IoU <b>{mean:.4f}</b>" in html
    assert "over\n12 images" in html and "SHA-256 " in html
    cards = [float(v) for v in re.findall(r'class="card" id="worst-\d+" data-iou="([\d.]+)"', html)]
    assert len(cards) == 5 and cards == sorted(cards)
    assert html.count("<tr><td>pets.") == 3 and "<svg" in html
    for words in ("object, found", "painted as object, but background", "object, missed"):
        assert words in html
    assert "<script" not in html  # no JavaScript needed, none loaded


def test_report_stays_small(report):
    folder, _ = report
    thumbs = list((folder / "thumbs").iterdir())
    assert len(thumbs) == 10 and all(p.stat().st_size < 40_000 for p in thumbs)
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 5 * 2**20


def test_overlay_colours_each_kind_of_pixel():
    image = np.full((2, 2, 3), 128, np.uint8)
    pred = np.array([[True, True], [False, False]])
    truth = np.array([[True, False], [True, False]])
    drawn = report_page.paint(image, pred, truth).astype(int)
    tp, fp, fn, tn = drawn[0, 0], drawn[0, 1], drawn[1, 0], drawn[1, 1]
    for pixel, kind in ((tp, "tp"), (fp, "fp"), (fn, "fn")):
        colour = np.array(report_page.COLOURS[kind][0])
        assert np.abs(pixel - colour).max() < np.abs(tn - colour).max()
        assert int(np.argmax(pixel)) == int(np.argmax(colour))
    assert tn[0] == tn[1] == tn[2]  # right background stays grey


def test_an_existing_folder_is_never_replaced_unasked(report, tmp_path, capsys):
    folder, _ = report
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the student's notes")
    final, staging = report_page.prepare_report_dir(mine, overwrite=False)
    assert final == tmp_path / "mine-1" and staging.parent == tmp_path
    staging.rmdir()
    with pytest.raises(ValueError, match="not a report of run_tests.py; not replaced"):
        report_page.prepare_report_dir(mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "the student's notes"
    final, staging = report_page.prepare_report_dir(folder, overwrite=True)  # an earlier report
    assert final == folder
    staging.rmdir()


@pytest.mark.parametrize("case, words", [("file", "a file, not a folder"),
                                         ("unwritable", "cannot write there")])
def test_bad_report_folders_are_clear_errors_before_grading(tmp_path, capsys, monkeypatch, case,
                                                            words):
    target = tmp_path / "report.html"
    if case == "file":
        target.write_text("<p>an old page</p>")
    else:  # a folder that cannot be made, whoever runs this (root included)
        target = Path("/proc/self/report")

    def no_grading(*args, **kwargs):
        raise AssertionError("graded before the report folder was checked")
    monkeypatch.setattr(run_tests, "grade_upload", no_grading)
    assert run_tests.main([str(EXAMPLES), "--report", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --report {target}: ") and words in err
    if case == "file":
        assert target.read_text() == "<p>an old page</p>"


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_worst_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as info:
        run_tests.main([str(EXAMPLES), "--report", "x", "--worst", value])
    assert info.value.code == 2
    assert "--worst: must be a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(browser_check.find_browser() is None,
                    reason="no Chromium on the PATH (Debian: apt-get install chromium); "
                           "the link check above still ran")
def test_in_a_real_browser_every_image_loads_and_the_worst_comes_first(report, tmp_path):
    folder, _ = report
    browser = browser_check.find_browser()
    found = browser_check.check_page(folder, browser)
    assert len(found["images"]) == 10
    assert all(width > 0 for _, width in found["images"]), found["images"]
    assert found["cards"][0] == min(found["cards"]) and len(found["cards"]) == 5
    shot = browser_check.screenshot(folder, tmp_path / "report.png", browser, max_kb=300)
    assert 0 < shot.stat().st_size <= 300 * 1024
    # The check can fail: a thumbnail gone is an image that did not load.
    gone = folder / found["images"][0][0]
    saved = gone.read_bytes()
    gone.unlink()
    try:
        broken = browser_check.check_page(folder, browser)
        assert broken["images"][0][1] == 0
    finally:
        gone.write_bytes(saved)


def test_headings_are_true_for_any_number_shown(report):
    folder, _ = report
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "<h2>The 5 worst of 12 images</h2>" in page
    assert report_page.cards_heading(12, 12) == "All 12 images, worst first"
    assert report_page.cards_heading(24, 12) == "All 12 images, worst first"
    assert report_page.cards_heading(1, 12) == "The 1 worst of 12 images"


def test_histogram_has_its_own_colours_and_a_readable_count_axis():
    svg = report_page.iou_histogram_svg(list(np.linspace(0.3, 1.0, 40)) + [0.95] * 30)
    used = {c.lower() for c in re.findall(r'(?:fill|stroke)="(#[0-9a-fA-F]{6})"', svg)}
    key = {"#%02x%02x%02x" % colour for colour, _ in report_page.COLOURS.values()}
    assert used and not used & key
    counts = [int(v) for v in re.findall(r'class="ytick"[^>]*>(\d+)<', svg)]
    assert len(counts) >= 3 and counts[0] == 0 and counts == sorted(counts)
    assert "IoU of the image" in svg and ">images<" in svg


def test_page_shows_no_absolute_path(report):
    """Model and data are named as typed from where the command ran, never from the root."""
    folder, _ = report
    html = (folder / "index.html").read_text(encoding="utf-8")
    assert str(ROOT) not in html and str(folder.parent.parent) not in html
    meta = re.search(r'<p class="meta">(.*?)</p>', html, re.S).group(1)
    assert "Model " in meta and "data " in meta and not re.search(r"(^|\s)/", meta)


def test_the_page_says_how_sure_the_marks_are_as_the_command_does(report):
    folder, printed = report
    line = next(text for text in printed.splitlines() if text.startswith("how sure: "))
    html = (folder / "index.html").read_text(encoding="utf-8")
    assert f'<p class="sure">{line}</p>' in html.replace("&lt;", "<").replace("&gt;", ">")
