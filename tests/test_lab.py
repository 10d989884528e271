"""The lab scripts' own arithmetic: error kinds of the diagnosis, the sweep's component filter
and views, the benchmark's speed yardstick and record, the seed pooling."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

import segmentation as seg
from conftest import make_dataset

from lab import benchmark, birds_summary, diagnose, seeds, sweep_predict, validate


def _square(mask: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    mask = mask.copy()
    mask[y:y + size, x:x + size] = True
    return mask


def test_error_kinds_split_every_wrong_pixel_once():
    empty = np.zeros((20, 30), dtype=bool)
    truth = _square(empty, 2, 2, 6)                      # 36 pixels
    pred = _square(_square(empty, 2, 2, 5), 2, 2, 7)     # the object, one pixel too wide...
    pred = _square(pred, 12, 20, 4)                      # ...and a separate blob of 16
    pred[2, 2] = False                                   # one missed pixel
    kinds = diagnose.error_kinds(pred, truth)
    assert kinds["other_object"] == 16
    assert kinds["overreach"] == 49 - 36
    assert kinds["missed"] == 1
    wrong = (pred ^ truth).sum()
    assert kinds["other_object"] + kinds["overreach"] + kinds["missed"] == wrong
    # Without the blob, only the boundary errors are left.
    assert kinds["iou_without_other_objects"] == (36 - 1) / 49
    assert kinds["iou"] == (36 - 1) / (49 + 16 - 1 + 1)


def test_keep_large_components():
    empty = np.zeros((20, 30), dtype=bool)
    pred = _square(_square(empty, 0, 0, 8), 12, 20, 4)   # 64 and 16 pixels
    assert sweep_predict.keep_large_components(pred, 0.0).sum() == 80
    assert sweep_predict.keep_large_components(pred, 0.25).sum() == 80
    assert sweep_predict.keep_large_components(pred, 0.3).sum() == 64
    assert not sweep_predict.keep_large_components(empty, 1.0).any()


def test_views_parse_sizes_and_mirrors():
    assert sweep_predict.parse_views("288f") == [(288, False), (288, True)]
    assert sweep_predict.parse_views("256+320f") == [(256, False), (320, False), (320, True)]


def test_sweep_probability_with_predicts_views_is_predict(tmp_path):
    # The sweep reimplements predict() to try other views; with predict's own views it must
    # give predict's probabilities, or its comparisons would not be about predict.
    torch.manual_seed(0)
    model = seg.get_model().eval()
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(path)
    expected = seg.predict(model, path, image_size=64)
    got = sweep_predict.probability(model, path, sweep_predict.parse_views("64f"), False)
    assert got.shape == expected.shape == (45, 70)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_benchmark_records_the_fixed_yardstick():
    step_ms = benchmark.reference_step_ms(steps=1, warmup=0)
    assert step_ms > 0
    record = {"quality": {"mean_iou": 0.8, "mean_iou_no_tta": 0.79, "share_below_0_5": 0.1,
                          "per_class": {"a": 0.8}, "per_class_no_tta": {"a": 0.79},
                          "class_sizes": {"a": 3}},
              "speed": {"predict_ms_640x360": 50.0, "predict_ms_own_size": 40.0,
                        "predict_ms_640x360_denormal_weights": 55.0,
                        "predict_6000x4000_extra_peak_mb": 300.0},
              "peak_memory_mb": 1000.0, "checkpoint_mb": 9.2,
              "machine": {"cores": 2, "torch": "x", "processor": "y",
                          "reference_step_ms": {"before grading": step_ms}}}
    row = [line for line in benchmark.markdown(record).splitlines() if "yardstick" in line]
    assert len(row) == 1 and row[0].endswith(f"): {step_ms:.0f} ms before grading |")
    del record["machine"]["reference_step_ms"]
    assert "yardstick" not in benchmark.markdown(record)


def test_settings_read_literals_and_plain_words_and_reject_a_missing_value():
    assert benchmark.parse_setting("min_crop_area=0.5") == ("min_crop_area", 0.5)
    assert benchmark.parse_setting("precision=bf16") == ("precision", "bf16")
    assert benchmark.parse_setting("precision='bf16'") == ("precision", "bf16")
    assert benchmark.parse_recipe("steps=10,precision=fp32") == {"steps": 10, "precision": "fp32"}
    for bad in ("steps", "=3"):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
            benchmark.parse_setting(bad)


def test_recipe_speed_runs_the_recipe_asked_for(tmp_path, monkeypatch):
    assert benchmark.parse_recipe("precision=fp32,min_crop_area=0.5") == {
        "precision": "fp32", "min_crop_area": 0.5}
    data = seg.SegmentationData(make_dataset(tmp_path / "train"), 48)
    calls = []
    real_fit = seg.fit
    monkeypatch.setattr(seg, "fit", lambda *a, **k: calls.append(k["config"]) or real_fit(*a, **k))
    assert benchmark.recipe_images_per_second(data, {"min_crop_area": 0.5}, steps=2) > 0
    assert [c.steps for c in calls] == [1, 2]
    assert all(c.min_crop_area == 0.5 and c.crop_size == seg.Config.crop_size for c in calls)


def test_scaled_folder_repeats_the_pairs_mirrored_and_cropped(tmp_path):
    train = make_dataset(tmp_path / "train", classes=("a",), per_class=3)
    folder = benchmark.build_scaled_folder(train, tmp_path / "big", 7)
    pairs = seg.find_pairs(folder)
    assert len(pairs) == 7
    data = seg.SegmentationData(folder, 32)
    assert len(data) == 7 and data.images.shape == (7, 3, 32, 32)
    first, repeat = seg.read_mask(pairs[0][1]), seg.read_mask(pairs[3][1])
    assert first.shape != repeat.shape or not np.array_equal(first, repeat)


def test_held_out_classes_leave_training_and_are_scored_apart(tmp_path, monkeypatch):
    train = make_dataset(tmp_path / "train", classes=("a", "b", "water"), per_class=4)
    seen = []
    real_train = seg.train_model

    def recording_train(root, **options):
        seen.extend(p[2] for p in seg.find_pairs(root))
        return real_train(root, **options)

    monkeypatch.setattr(seg, "train_model", recording_train)
    monkeypatch.setattr(sys, "argv", ["validate.py", "H", "--train", str(train), "--hold-out",
                                      "water", "--set", "steps=1", "batch_size=2",
                                      "image_size=32", "crop_size=32", "encoder_weights=None",
                                      "--out", str(tmp_path)])
    assert validate.main() == 0
    assert "water" not in seen and {"a", "b"} <= set(seen)
    record = json.loads((tmp_path / "H.json").read_text())
    assert list(record["held_out"]) == ["water"]
    assert "water" not in record["per_class"]
    assert (train / "images" / "water").is_dir()  # the data itself is untouched


def test_seeds_pools_runs_that_differ_only_in_the_seed():
    def record(seed, val, water, **options):
        return {"options": {"seed": seed, **options}, "val_iou": val,
                "by_source": {"pets": val}, "held_out": {"davis.blackswan": water}}

    runs = [record(0, 0.80, 0.5), record(1, 0.84, 0.7), record(0, 0.9, 0.1, lr=0.002)]
    recipes = seeds.group(runs)
    assert sorted(recipes) == ["defaults", "lr=0.002"]
    assert len(recipes["defaults"]) == 2
    rows = seeds.table(runs).splitlines()
    assert rows[0].endswith("| pets | davis.blackswan (held out) |")
    assert "| defaults | 2 | 0.8200 (0.8000-0.8400) | 0.820 | 0.600 (0.500-0.700) |" in rows
    assert "| lr=0.002 | 1 | 0.9000 | 0.900 | 0.100 |" in rows
    runs[0]["averages"] = {"ema_0.99": {"val_iou": 0.82, "by_source": {"pets": 0.82},
                                        "held_out": {"davis.blackswan": 0.6}}}
    rows = seeds.table(seeds.expand(runs)).splitlines()
    assert "| average=ema_0.99 | 1 | 0.8200 | 0.820 | 0.600 |" in rows


def test_seeds_keeps_runs_on_fewer_pairs_apart_and_shows_the_salient_classes():
    def record(seed, val, pairs):
        return {"options": {"seed": seed}, "val_iou": val, "by_source": {"duts": val},
                "per_class": {"duts.objects": val, "duts.bird": val - 0.1}, "train_pairs": pairs}

    runs = [record(0, 0.80, 100), record(1, 0.84, 100), record(0, 0.70, 50)]
    assert sorted(seeds.group(runs)) == ["defaults", "train_pairs=50"]
    rows = seeds.table(runs).splitlines()
    assert rows[0] == "| recipe | seeds | val IoU | duts | duts.objects | duts.bird |"
    assert ("| defaults | 2 | 0.8200 (0.8000-0.8400) | 0.820 | 0.820 (0.800-0.840) "
            "| 0.720 (0.700-0.740) |") in rows
    assert "| train_pairs=50 | 1 | 0.7000 | 0.700 | 0.700 | 0.600 |" in rows


def test_seeds_names_and_skips_a_file_that_is_not_a_run_record(tmp_path, monkeypatch, capsys):
    run = {"options": {"seed": 0}, "val_iou": 0.8, "by_source": {"pets": 0.8}}
    (tmp_path / "A0.json").write_text(json.dumps(run))
    (tmp_path / "A0.history.json").write_text(json.dumps([{"epoch": 1}]))
    (tmp_path / "sweep.json").write_text(json.dumps({"checkpoint": "x.pth", "results": {}}))
    monkeypatch.setattr(sys, "argv", ["seeds.py", *map(str, sorted(tmp_path.glob("*.json")))])
    assert seeds.main() == 0
    out, err = capsys.readouterr()
    assert "| defaults | 1 | 0.8000 | 0.800 |" in out
    assert err == f"skipped {tmp_path / 'sweep.json'}: not a validate.py or benchmark.py record\n"


def test_weight_averages_follow_the_steps():
    """EMA and the mean over the last share of the steps, checked on a one-weight model whose
    train step sets its weight to the step's number."""
    model = torch.nn.Linear(1, 1, bias=False)
    steps = iter(range(1, 11))

    def train_step(m):
        with torch.no_grad():
            m.weight.fill_(float(next(steps)))
    averages = validate.WeightAverages([0.5], [0.3], total_steps=10)
    step = averages.wrap(train_step)
    for _ in range(10):
        step(model)
    averaged = averages.models(model)
    ema = 1.0
    for value in range(2, 11):
        ema = 0.5 * ema + 0.5 * value
    assert averaged["ema_0.5"].weight.item() == pytest.approx(ema)
    assert averaged["swa_0.3"].weight.item() == pytest.approx((8 + 9 + 10) / 3)
    assert model.weight.item() == 10.0  # the trained model itself is left alone


def test_seeds_pools_test_records_by_source():
    def record(seed, pets, duts, **options):
        return {"recipe": {**asdict(seg.Config()), **options, "seed": seed},
                "training": {"steps": 3000, "images": 100},
                "quality": {"mean_iou": (3 * pets + duts) / 4,
                            "per_class": {"pets.Bengal": pets, "pets.Abyssinian": pets,
                                          "weizmann.horse": pets, "duts.objects": duts},
                            "class_sizes": {"pets.Bengal": 1, "pets.Abyssinian": 1,
                                            "weizmann.horse": 1, "duts.objects": 1}}}

    runs = [record(0, 0.8, 0.6), record(1, 0.9, 0.6), record(0, 0.7, 0.7, steps=3000)]
    lines = seeds.benchmark_table(runs).splitlines()
    assert lines[0] == "| recipe | seed | test mean IoU | marks | DUTS | horses | pets |"
    assert "| defaults | 1 | 0.8250 | 9 | 0.600 | 0.900 | 0.900 |" in lines
    assert "| steps=3000 | 0 | 0.7000 | 7 | 0.700 | 0.700 | 0.700 |" in lines
    pooled = lines[lines.index("") + 1:]
    assert pooled[0] == ("| recipe | seeds | test mean IoU | worst seed | spread | DUTS | horses "
                         "| pets |")
    assert ("| defaults | 2 | 0.7875 | 0.7500 | 0.0750 | 0.600 (0.600-0.600) "
            "| 0.850 (0.800-0.900) | 0.850 (0.800-0.900) |") in pooled
    assert seeds.source_of("duts.bird") == "DUTS birds" and seeds.source_of("davis.x") == "DAVIS"


def test_seeds_counts_a_length_from_the_default_rule_as_the_defaults():
    ruled = {**asdict(seg.Config()), "schedule": dict(seg.SCHEDULE), "seed": 1}
    assert seeds.recipe_key(ruled) == "defaults"
    assert seeds.recipe_key({**ruled, "schedule": {"passes": 3}}) == "schedule={'passes': 3}"
    assert seeds.recipe_key({**asdict(seg.Config()), "steps": 1992}) == "steps=1992"
    # a record made before an option left the code names it, switched off: today's recipe
    before = {**ruled, "frozen_layers": 0, "early_crop_size": 0, "early_fraction": 0.5}
    assert seeds.recipe_key(before) == "defaults"
    assert seeds.recipe_key({**before, "frozen_layers": 4}) == "frozen_layers=4"


def test_seeds_counts_an_earlier_rule_as_today_s_where_it_chose_the_same_length(monkeypatch):
    monkeypatch.setattr(seg, "SCHEDULE", {"passes": 2, "min_steps": 30, "max_steps": 100})
    monkeypatch.setattr(seeds, "SCHEDULE", seg.SCHEDULE)
    older = {**asdict(seg.Config()), "schedule": {"passes": 2, "min_steps": 10, "max_steps": 100}}
    assert seeds.recipe_key(older, steps=40, pairs=320) == "defaults"  # 20 a pass: no floor
    # where the old floor chose a length today's rule would not, it is another recipe
    assert seeds.recipe_key(older, steps=10, pairs=32).startswith("schedule=")
    assert seeds.recipe_key(older).startswith("schedule=")  # the length unknown


def test_a_smaller_training_set_is_scored_on_the_same_block(tmp_path, monkeypatch):
    train = make_dataset(tmp_path / "train", classes=("a", "b"), per_class=20)
    seen = {}
    real_train = seg.train_model

    def recording_train(root, **options):
        seen["train"] = [p[0].name for p in seg.find_pairs(root)]
        seen["val"] = [p[0].name for p in seg.find_pairs(options["val_data_path"])]
        return real_train(root, **options)

    monkeypatch.setattr(seg, "train_model", recording_train)
    monkeypatch.setattr(sys, "argv", ["validate.py", "S", "--train", str(train), "--train-pairs",
                                      "10", "--set", "steps=1", "batch_size=2", "image_size=32",
                                      "crop_size=32", "encoder_weights=None", "--out",
                                      str(tmp_path)])
    assert validate.main() == 0
    assert len(seen["train"]) == 10 and seen["train"][:2] == ["000.jpg", "003.jpg"]
    assert seen["val"] == ["017.jpg", "018.jpg", "019.jpg"] * 2  # the last 15% of each class
    record = json.loads((tmp_path / "S.json").read_text())
    assert record["train_pairs"] == 10 and record["val_images"] == 6


def test_a_validation_record_holds_the_steps_it_ran_and_is_pooled_by_them(tmp_path, monkeypatch):
    train = make_dataset(tmp_path / "train", classes=("a",), per_class=12)
    monkeypatch.setattr(sys, "argv", ["validate.py", "E", "--train", str(train), "--set",
                                      "epochs=1", "batch_size=2", "image_size=32", "crop_size=32",
                                      "encoder_weights=None", "--out", str(tmp_path)])
    assert validate.main() == 0
    record = json.loads((tmp_path / "E.json").read_text())
    assert record["train_pairs"] == 10 and record["steps"] == 5  # one pass of 10 pairs, 2 a step
    options = {k: v for k, v in record["options"].items() if k != "epochs"}
    set_length = {**record, "options": {**options, "seed": 1, "steps": 5}}
    recipes = seeds.group([record, set_length])  # one pass and 5 steps: the same run, pooled
    assert len(recipes) == 1 and "steps=5" in next(iter(recipes))


def test_a_setting_without_a_value_is_a_usage_error_before_any_data_is_read(tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(sys, "argv", ["validate.py", "X", "--train", str(tmp_path / "absent"),
                                      "--set", "steps", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        validate.main()
    assert stop.value.code == 2
    assert "expected KEY=VALUE, got 'steps'" in capsys.readouterr().err


def _bird_run(pairs, seed, iou, **options):
    """A lab/birds.py record with the figures birds_summary reads."""
    return {"class": "cub.bird", "options": {"seed": seed, **options}, "train_pairs": pairs,
            "steps": 3000, "train_minutes": 40.0,
            "test": {"iou": iou, "missed_share": 0.1, "painted_share": 0.05,
                     "smaller_half_iou": iou - 0.02, "larger_half_iou": iou + 0.02}}


def test_birds_summary_pools_seeds_and_reads_the_curve_per_doubling(tmp_path):
    runs = [_bird_run(150, 0, 0.86), _bird_run(150, 1, 0.88), _bird_run(300, 0, 0.89),
            _bird_run(300, 1, 0.89), _bird_run(600, 0, 0.90), _bird_run(600, 1, 0.92),
            _bird_run(600, 0, 0.95, min_crop_area=0.2)]
    text = birds_summary.table(runs)
    assert "| defaults | 600 | 3,000 | 0, 1 | 0.9100 | 0.9000 | 0.0200 | 10 |" in text
    assert "| min_crop_area=0.2 | 600 | 3,000 | 0 | 0.9500 |" in text
    fit = birds_summary.curve(runs, 2400)["fit"]  # means 0.87, 0.89, 0.91: +0.02 a doubling
    assert fit["per_doubling"] == pytest.approx(0.02)
    assert fit["predicted"] == pytest.approx(0.95)  # two doublings past 600
    birds_summary.figure(tmp_path / "curve.png", birds_summary.curve(runs, 2400), "cub.bird")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_birds_summary_skips_what_is_not_a_run_record(tmp_path, capsys):
    (tmp_path / "D0.json").write_text(json.dumps(_bird_run(600, 0, 0.9)))
    (tmp_path / "predict-size.json").write_text(json.dumps({"256": [0.89]}))
    records = birds_summary.read_runs(sorted(tmp_path.glob("*.json")))
    assert [r["train_pairs"] for r in records] == [600]
    assert f"skipping {tmp_path / 'predict-size.json'}" in capsys.readouterr().err
    (tmp_path / "D0.json").unlink()
    with pytest.raises(SystemExit, match="none of the files"):
        birds_summary.read_runs([tmp_path / "predict-size.json"])


def test_birds_never_overwrites_a_runs_record(tmp_path, monkeypatch, capsys):
    from lab import birds
    (tmp_path / "D0.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["birds.py", "D0", "--data", str(tmp_path / "absent"),
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        birds.main()
    assert stop.value.code == 2 and "is never overwritten" in capsys.readouterr().err
    assert (tmp_path / "D0.json").read_text() == "{}"
