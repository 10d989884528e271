"""The shipped checkpoint, graded on the shared stand-in test split exactly as the course does."""

from __future__ import annotations

import re

import pytest

import run_tests
from conftest import CHECKPOINT, SHARED_DATA, needs_shared

pytestmark = [needs_shared(SHARED_DATA), pytest.mark.slow,
              pytest.mark.skipif(not CHECKPOINT.exists(), reason="no shipped segmentation_model.pth")]


def test_shipped_checkpoint_on_the_shared_test_split(capsys):
    assert run_tests.main([str(SHARED_DATA), "--model", str(CHECKPOINT)]) == 0
    printed = capsys.readouterr().out
    mean_iou = float(re.search(r"^mean IoU (\d\.\d+)$", printed, re.M).group(1))
    marks = int(re.search(r"^marks (\d+)/10$", printed, re.M).group(1))
    # The package's promise on this split since it grew on 2026-11-30 (two thirds of it DUTS
    # salient objects): 7 marks or more. The default recipe (the schedule rule since
    # 2026-12-03) scored 0.7472-0.7507 there over seeds 0-2, the fixed 1,992 steps before
    # it 0.7286-0.7388 (bench/results/schedule-4372/, scale-4372/); 8 marks on 243 images before.
    assert mean_iou >= 0.70, printed
    assert marks == run_tests.marks_for(mean_iou) >= 7
    n_images = len(list((SHARED_DATA / "test" / "images").glob("*/*.jpg")))
    assert f"{n_images} images," in printed
