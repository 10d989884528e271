"""The assignment's comparison script, in its seconds-long --quick mode, so that it cannot rot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_WEIGHTS, make_dataset, needs_shared

from lab import compare, compare_seeds


def test_quick_comparison_writes_table_and_figures(tmp_path):
    data = tmp_path / "data"
    make_dataset(data / "train", classes=("bird", "other"), per_class=6, seed=0)
    make_dataset(data / "test", classes=("bird", "other"), per_class=3, seed=1)
    out = tmp_path / "out"
    assert compare.main(["--quick", "--data", str(data), "--class", "bird", "--out", str(out),
                         "--checkpoint", str(tmp_path / "absent.pth")]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert {"encoder-decoder", "U-Net", "all background", "all object"} <= set(rows)
    assert rows["all background"]["iou"] == 0.0  # every synthetic image has an object
    for name in ("encoder-decoder", "U-Net"):
        assert 0.0 <= rows[name]["iou"] <= 1.0 and rows[name]["parameters"] > 0
        assert results["histories"][name], name
        assert rows[name]["steps"] == results["histories"][name][-1]["steps"] > 0
    assert results["seed"] == 0 and results["command"].startswith("python -m lab.compare --quick")
    assert results["yardstick_step_ms"] is None  # --quick times no yardstick
    # Same layers but for the skips: the U-Net has more parameters only in its decoder's inputs.
    assert rows["U-Net"]["parameters"] > rows["encoder-decoder"]["parameters"]
    for name in ("comparison.png", "curves.png", "results.md"):
        assert (out / name).stat().st_size > 0
    before = (out / "results.json").read_bytes()
    with pytest.raises(SystemExit):  # a second run into the same folder is refused
        compare.main(["--quick", "--data", str(data), "--class", "bird", "--out", str(out)])
    assert (out / "results.json").read_bytes() == before


@needs_shared(SHARED_WEIGHTS)
@pytest.mark.slow
def test_a_small_sample_with_the_pretrained_model_trained_on_it_too(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_ENCODER_WEIGHTS", str(SHARED_WEIGHTS))
    data = tmp_path / "data"
    make_dataset(data / "train", classes=("bird",), per_class=12, seed=0)
    make_dataset(data / "test", classes=("bird",), per_class=3, seed=1)
    out = tmp_path / "out"
    assert compare.main(["--quick", "--data", str(data), "--class", "bird", "--pairs", "8",
                         "--pretrained", "--out", str(out),
                         "--checkpoint", str(tmp_path / "absent.pth")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sample"] == "8 training pairs"
    pretrained = results["rows"]["pretrained U-Net, same sample and budget"]
    assert pretrained["parameters"] > results["rows"]["U-Net"]["parameters"]
    assert results["histories"]["pretrained U-Net, same sample and budget"]


def test_the_comparison_without_photos_holds_no_pixel_of_them(tmp_path):
    # Two data sets with the same masks and different photos: without photos the pictures are
    # the same, with them they differ (so the test can fail).
    first = make_dataset(tmp_path / "a" / "test", classes=("bird",), per_class=6, seed=1)
    second = make_dataset(tmp_path / "b" / "test", classes=("bird",), per_class=6, seed=1)
    for photo in sorted((second / "images" / "bird").glob("*.jpg")):
        Image.fromarray(255 - np.array(Image.open(photo))).save(photo, quality=95)
    masks = {"U-Net": first / "gt"}  # a model that drew the ground truth
    scores = {"U-Net": [{"image": f"bird/{i:03d}", "iou": 1 - i / 10} for i in range(6)]}

    def picture(data, photos: bool) -> np.ndarray:
        path = tmp_path / f"{data.parent.name}-{photos}.png"
        compare.comparison_figure(path, data.parent, masks, scores, photos=photos)
        return np.array(Image.open(path).convert("RGB"))

    assert np.array_equal(picture(first, False), picture(second, False))
    assert not np.array_equal(picture(first, True), picture(second, True))
    assert picture(first, False).shape[1] < picture(first, True).shape[1]  # no photo column


def _compare_run(seed: int, encoder_decoder: float, unet: float) -> dict:
    """A compare.py record with the figures compare_seeds reads."""
    return {"class": "cub.bird", "sample": "60 training pairs", "budget_s": 420.0, "seed": seed,
            "yardstick_step_ms": 1000.0 + seed,
            "rows": {"encoder-decoder": {"iou": encoder_decoder, "steps": 900},
                     "U-Net": {"iou": unet, "steps": 800},
                     "all background": {"iou": 0.0}}}


def test_compare_seeds_pools_each_model_and_pairs_the_skips_seed_by_seed(tmp_path, capsys):
    runs = [_compare_run(1, 0.50, 0.56), _compare_run(0, 0.54, 0.52), _compare_run(2, 0.52, 0.54)]
    text = compare_seeds.table(runs)
    assert "Seeds 0, 1, 2;" in text
    assert "| encoder-decoder | 0.5200 | 0.5000 | 0.0400 | 0.5400, 0.5000, 0.5200 | 900 |" in text
    assert "| U-Net | 0.5400 | 0.5200 | 0.0400 | 0.5200, 0.5600, 0.5400 | 800 |" in text
    assert "seed by seed: -0.0200, +0.0600, +0.0200; mean +0.0200" in text
    assert "all background" not in text
    paths = []
    for run in runs:
        paths.append(tmp_path / f"{run['seed']}.json")
        paths[-1].write_text(json.dumps(run))
    assert compare_seeds.main([*map(str, paths), "--write", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == text == capsys.readouterr().out
    paths[0].write_text(json.dumps({**runs[0], "budget_s": 60.0}))
    with pytest.raises(SystemExit):
        compare_seeds.main(list(map(str, paths)))
