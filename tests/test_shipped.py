"""The shipped checkpoint, graded on the shared stand-in test split exactly as the course does."""

from __future__ import annotations

import re

import pytest

import run_tests
from conftest import CHECKPOINT, SHARED_DATA, needs_shared

pytestmark = [needs_shared(SHARED_DATA), pytest.mark.slow,
              pytest.mark.skipif(not CHECKPOINT.exists(),
                                 reason="no shipped segmentation_model.pth")]


def test_shipped_checkpoint_on_the_shared_test_split(capsys):
    assert run_tests.main([str(SHARED_DATA), "--model", str(CHECKPOINT)]) == 0
    printed = capsys.readouterr().out
    mean_iou = float(re.search(r"^mean IoU (\d\.\d+)$", printed, re.M).group(1))
    marks = int(re.search(r"^marks (\d+)/10$", printed, re.M).group(1))
    # The package's promise on this split (500 of its 893 images DUTS salient objects, 150 CUB-like
    # birds since 2026-12-06): 8 marks. The reference model retrained on the 4,972 pairs that day
    # scored 0.7748 (lab/results/reference-4972/); the one before it, trained without the
    # birds, 0.7576, and its recipe spread 0.004 over seeds 0-2 (lab/results/schedule-4372/).
    assert mean_iou >= 0.75, printed
    assert marks == run_tests.marks_for(mean_iou) >= 8
    n_images = len(list((SHARED_DATA / "test" / "images").glob("*/*.jpg")))
    assert f"{n_images} images," in printed
