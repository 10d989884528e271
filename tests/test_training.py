"""Training: it learns, it is reproducible, it resumes, and it never overwrites silently."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

import segmentation
from conftest import SHARED_WEIGHTS, make_dataset, needs_shared
from segmentation import SegmentationData, evaluate_batches, fit, get_model, train_model
from tools import predict as predict_tool

SIZE = 64  # tiny images keep these runs to seconds on a CPU


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    train = SegmentationData(make_dataset(root / "train", per_class=16, seed=0), SIZE)
    val = SegmentationData(make_dataset(root / "val", per_class=6, seed=1), SIZE)
    return train, val


def _fit(data, epochs=1, state_path=None, resume=False, **options):
    torch.manual_seed(0)
    model = get_model()
    config = segmentation.Config(epochs=epochs, batch_size=8, lr=3e-3, **options)
    history = fit(model, data[0], data[1], config, state_path=state_path, resume=resume,
                  verbose=False)
    return model, history


def test_short_training_beats_an_untrained_model(data):
    torch.manual_seed(0)
    untrained = evaluate_batches(get_model(), data[1], torch.device("cpu"))
    model, history = _fit(data, epochs=12)
    trained = evaluate_batches(model, data[1], torch.device("cpu"))
    assert history[-1]["loss"] < history[0]["loss"]
    assert trained > untrained + 0.2, (untrained, trained)
    assert not model.training


def test_same_seed_same_weights_bit_for_bit(data):
    first, _ = _fit(data)
    second, _ = _fit(data)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key


def test_different_seed_different_weights(data):
    first, _ = _fit(data)
    second, _ = _fit(data, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                     second.state_dict().values()))


@pytest.mark.parametrize("options", [{}, {"crop_size": 48}])
def test_interrupted_run_resumes_to_the_same_weights(data, tmp_path, monkeypatch, options):
    uninterrupted, _ = _fit(data, epochs=3, **options)
    state_path = tmp_path / "run.state"
    real_save = segmentation.save_atomic
    saves = []

    def save_then_die(obj, path):  # killed right after epoch 2 was saved
        real_save(obj, path)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(segmentation, "save_atomic", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _fit(data, epochs=3, state_path=state_path, **options)
    monkeypatch.setattr(segmentation, "save_atomic", real_save)
    assert torch.load(state_path)["epoch"] == 2
    resumed, history = _fit(data, epochs=3, state_path=state_path, resume=True, **options)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (key, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_existing_checkpoint_is_never_replaced_unasked(tmp_path):
    data = make_dataset(tmp_path / "train", per_class=2)
    out = tmp_path / "segmentation_model.pth"
    out.write_bytes(b"the user's own model")
    model = train_model(data, epochs=1, encoder_weights=None, out_path=out, image_size=SIZE,
                        verbose=False)
    assert out.read_bytes() == b"the user's own model"
    saved = tmp_path / "segmentation_model-1.pth"
    fresh = get_model()
    fresh.load_state_dict(torch.load(saved, map_location="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh.state_dict().values()))
    assert not (tmp_path / "segmentation_model.pth.state").exists()
    train_model(data, epochs=1, encoder_weights=None, out_path=out, overwrite=True,
                image_size=SIZE, verbose=False)
    assert out.read_bytes() != b"the user's own model"


def _killed_after_first_epoch(monkeypatch, data, **options) -> None:
    """train_model(data, **options), killed (KeyboardInterrupt) right after its first epoch was
    saved."""
    real_save = segmentation.save_atomic

    def die_after_first_epoch(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt
    monkeypatch.setattr(segmentation, "save_atomic", die_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_model(data, **options)
    monkeypatch.setattr(segmentation, "save_atomic", real_save)


def _interrupted_run(tmp_path, monkeypatch):
    """An interrupted two-epoch run on a small folder: (data folder, checkpoint path)."""
    data = make_dataset(tmp_path / "train", per_class=3)
    out = tmp_path / "segmentation_model.pth"
    _killed_after_first_epoch(monkeypatch, data, epochs=2, encoder_weights=None, out_path=out,
                              image_size=SIZE, verbose=False)
    return data, out


def test_train_model_resumes_beside_an_existing_checkpoint(tmp_path, monkeypatch):
    """Killed mid-run, resumed by the same call: same weights, the user's file untouched."""
    data = make_dataset(tmp_path / "train", per_class=3)
    out = tmp_path / "segmentation_model.pth"
    out.write_bytes(b"the user's own model")
    options = dict(epochs=2, encoder_weights=None, out_path=out, image_size=SIZE, verbose=False)
    uninterrupted = train_model(data, **{**options, "out_path": None})
    _killed_after_first_epoch(monkeypatch, data, **options)
    resumed = train_model(data, resume=True, **options)
    assert out.read_bytes() == b"the user's own model"
    assert (tmp_path / "segmentation_model-1.pth").exists()
    for (key, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_missing_encoder_weights_say_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.delenv(segmentation.ENCODER_WEIGHTS_ENV, raising=False)

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(segmentation, "_torchvision_imagenet_state", offline)
    with pytest.raises(RuntimeError, match=segmentation.ENCODER_WEIGHTS_ENV):
        segmentation.load_encoder_weights(get_model().encoder)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        segmentation.load_encoder_weights(get_model().encoder, tmp_path / "nowhere.pth")


@needs_shared(SHARED_WEIGHTS)
def test_encoder_weights_from_the_environment(monkeypatch):
    monkeypatch.setenv(segmentation.ENCODER_WEIGHTS_ENV, str(SHARED_WEIGHTS))
    encoder = get_model().encoder
    assert segmentation.load_encoder_weights(encoder) == str(SHARED_WEIGHTS)
    expected = torch.load(SHARED_WEIGHTS, map_location="cpu")["features.0.0.weight"]
    assert torch.equal(encoder.features[0][0].weight, expected)


def test_command_line_reports_bad_data_without_traceback(tmp_path, capsys):
    assert segmentation.main(["train", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "folder not found" in err and "Traceback" not in err


def test_length_is_in_steps_whatever_the_data_size(data):
    """The default schedule counts steps: twice the data is fewer passes, not a longer run."""
    _, history = _fit(data, epochs=None, steps=5)
    assert history[-1]["steps"] == 5 and len(history) == 2  # 4 batches a pass: 4 + 1
    double = SegmentationData.__new__(SegmentationData)
    double.pairs = data[0].pairs * 2
    double.images = data[0].images.repeat(2, 1, 1, 1)
    double.masks = data[0].masks.repeat(2, 1, 1, 1)
    _, history = _fit((double, data[1]), epochs=None, steps=5)
    assert history[-1]["steps"] == 5 and len(history) == 1  # 8 batches a pass
    _, history = _fit(data, epochs=2)  # epochs still asks for whole passes
    assert [h["steps"] for h in history] == [4, 8]


def test_train_model_says_what_it_will_do_before_the_first_step(tmp_path, capsys):
    data = make_dataset(tmp_path / "train", per_class=3)
    train_model(data, steps=2, encoder_weights=None, out_path=tmp_path / "m.pth", image_size=SIZE)
    printed = capsys.readouterr().out.splitlines()
    loaded = next(i for i, line in enumerate(printed) if line.startswith("loaded 6 training"))
    saved_as = next(i for i, line in enumerate(printed)
                    if line.startswith("the model will be saved as"))
    device = next(i for i, line in enumerate(printed) if line.startswith("device cpu"))
    plan = next(i for i, line in enumerate(printed) if line.startswith("training 2 steps"))
    first_epoch = next(i for i, line in enumerate(printed) if line.startswith("epoch"))
    assert loaded < saved_as < device < plan < first_epoch
    assert printed[device].endswith("precision fp32")
    # 6 images make a batch of 6, not 16: a step is a pass, and the plan says so.
    assert printed[plan] == "training 2 steps (2.0 passes over 6 pairs), 6 images a step"
    assert printed[first_epoch].startswith("epoch   1/2")


def _schedule(monkeypatch, **rule):
    """The default length as the rule SCHEDULE=`rule`."""
    monkeypatch.setattr(segmentation, "SCHEDULE", rule)


def test_the_default_schedule_follows_the_data_within_its_floor_and_cap(monkeypatch):
    _schedule(monkeypatch, passes=2, min_steps=10, max_steps=100)
    few, few_why = segmentation.default_steps(12)       # 1 batch a pass: 2 steps wanted
    some, some_why = segmentation.default_steps(200)    # 13 batches a pass: 26 steps
    many, many_why = segmentation.default_steps(1000)   # 63 batches a pass: 126 steps
    assert (few, some, many) == (10, 26, 100)
    assert some_why == "the default schedule: 2 passes, within 10-100 steps"
    assert few_why.endswith("2 passes would be 2 steps, so its floor")
    assert many_why.endswith("would be 126 steps, so its cap; --steps or --minutes for more")
    assert segmentation.default_steps(200, batch_size=4)[0] == 100  # 50 batches a pass


def test_the_shipped_schedule_gives_sane_lengths_for_a_tiny_and_a_huge_folder():
    rule = segmentation.SCHEDULE
    assert rule["min_steps"] <= rule["max_steps"]
    tiny, huge = segmentation.default_steps(12)[0], segmentation.default_steps(10**6)[0]
    assert (tiny, huge) == (rule["min_steps"], rule["max_steps"])


def test_train_model_says_which_length_the_schedule_chose_and_records_it(tmp_path, monkeypatch,
                                                                           capsys):
    _schedule(monkeypatch, passes=1.5, min_steps=3, max_steps=5)
    data = make_dataset(tmp_path / "train", per_class=3)
    out = tmp_path / "m.pth"
    train_model(data, encoder_weights=None, out_path=out, image_size=SIZE)
    printed = capsys.readouterr().out.splitlines()
    plan = next(i for i, line in enumerate(printed) if line.startswith("training "))
    assert printed[plan] == ("training 3 steps (3.0 passes over 6 pairs; the default schedule: "
                             "1.5 passes, within 3-5 steps; 1.5 passes would be 2 steps, so "
                             "its floor), 6 images a step")
    assert plan < next(i for i, line in enumerate(printed) if line.startswith("epoch"))
    record = json.loads(segmentation.record_path(out).read_text())
    assert record["steps"] == 3 and record["recipe"]["schedule"] == segmentation.SCHEDULE
    assert record["recipe"]["steps"] is None and "steps" not in record["options"]


def test_no_timing_probe_the_estimate_comes_from_the_runs_own_steps(data, monkeypatch, capsys):
    """Every step trained is a step of the run (no separate probe), and after the timed steps
    the run prices the rest of itself. A fake clock makes this independent of the machine."""
    calls, now = [], [0.0]
    real_step = segmentation.train_step

    def counted_step(*args, **kwargs):
        calls.append(1)
        now[0] += 2.0  # every step costs 2 s of fake time
        return real_step(*args, **kwargs)

    monkeypatch.setattr(segmentation, "train_step", counted_step)
    torch.manual_seed(0)
    fit(get_model(), data[0], config=segmentation.Config(steps=12, batch_size=4), verbose=True,
        clock=lambda: now[0])
    assert len(calls) == 12
    printed = capsys.readouterr().out.splitlines()
    first, last = segmentation.ESTIMATE_STEPS
    estimate = [line for line in printed if line.startswith(f"steps {first + 1}-{last} took")]
    # 12 - 5 steps left at 2.00 s each: 14 s.
    assert estimate == [f"steps {first + 1}-{last} took 2.00 s each here: expect about 0m14s more "
                        f"for the remaining {12 - last} steps"]
    first_pass = next(i for i, line in enumerate(printed) if line.startswith("epoch"))
    assert printed.index(estimate[0]) < first_pass


def test_runs_too_short_to_time_print_no_estimate(data, capsys):
    torch.manual_seed(0)
    fit(get_model(), data[0], config=segmentation.Config(steps=segmentation.ESTIMATE_STEPS[1],
                                                         batch_size=8), verbose=True)
    assert " took " not in capsys.readouterr().out


def test_train_command_passes_the_length_it_was_given(monkeypatch):
    """--steps and --epochs reach train_model as given, --minutes lets the clock end the run,
    plain `train` leaves the length to train_model's defaults."""
    calls = []
    monkeypatch.setattr(segmentation, "train_model", lambda data, **kwargs: calls.append(kwargs))
    for args in (["--steps", "5"], ["--epochs", "3"], ["--minutes", "2"], []):
        assert segmentation.main(["train", "data", *args]) == 0
    short, passes, timed, plain = calls
    assert short["steps"] == 5 and short["epochs"] is None and short["minutes"] is None
    assert passes["epochs"] == 3 and passes["steps"] is None
    assert timed["minutes"] == 2 and timed["steps"] is None and timed["epochs"] is None
    assert plain["steps"] is plain["epochs"] is plain["minutes"] is None
    assert {k: v for k, v in plain.items() if k in asdict(segmentation.Config())} == asdict(
        segmentation.Config())  # every other flag at the recipe's default


def _no_data_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the data was read before the options were checked")
    monkeypatch.setattr(SegmentationData, "__init__", refuse)


@pytest.mark.parametrize("args, option", [
    (["--steps", "-5"], "--steps"), (["--steps", "0"], "--steps"),
    (["--epochs", "2", "--steps", "5"], "--steps"), (["--epochs", "0"], "--epochs"),
    (["--minutes", "-1"], "--minutes"), (["--val-fraction", "1.5"], "--val-fraction"),
    (["--device", "foo"], "--device"),
    (["--precision", "fp8"], "--precision"), (["--seed", "x"], "--seed"),
    (["--device", "cpu", "--precision", "fp16"], "--precision")])
def test_bad_training_options_are_usage_errors_before_any_data_is_read(args, option, capsys,
                                                                       monkeypatch):
    _no_data_read(monkeypatch)
    with pytest.raises(SystemExit) as info:
        segmentation.main(["train", "data", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {option}" in err[0], err


@pytest.mark.parametrize("options, message", [
    ({"steps": -5}, "steps must be a whole number >= 1"), ({"steps": 0}, "steps must be"),
    ({"steps": 5, "epochs": 2}, "not steps and epochs"), ({"epochs": 0}, "epochs must be"),
    ({"val_fraction": 1.5}, r"val_fraction must be a fraction in \[0, 1\)"),
    ({"min_crop_area": 0}, "min_crop_area must be"), ({"minutes": 0}, "minutes must be"),
    ({"precision": "fp64"}, "precision must be one of auto, fp32"), ({"lr": True}, "lr must be"),
    ({"device": "foo"}, "device must be cpu, cuda or cuda:N"),
    ({"precision": "fp16"}, "fp16 needs a CUDA GPU"),
    ({"batch_sise": 8}, "unknown training option")])
def test_train_model_checks_its_options_before_reading(options, message, monkeypatch):
    _no_data_read(monkeypatch)
    with pytest.raises(ValueError, match=message):
        train_model("data", out_path=None, **options)


class FakeCuda:
    """torch.cuda as a machine with one GPU of the given compute capability would show it."""

    def __init__(self, monkeypatch, capability, name):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        # The trap: emulated bf16 makes this answer True even on a T4.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("capability, name, expected", [
    ((7, 5), "Tesla T4", "fp16"), ((6, 0), "Tesla P100-PCIE-16GB", "fp16"),
    ((7, 0), "Tesla V100-SXM2-16GB", "fp16"), ((8, 0), "NVIDIA A100-SXM4-40GB", "bf16"),
    ((9, 0), "NVIDIA H100 80GB HBM3", "bf16"), ((8, 6), "NVIDIA GeForce RTX 3060", "bf16")])
def test_precision_follows_the_card(monkeypatch, capability, name, expected):
    FakeCuda(monkeypatch, capability, name)
    device = segmentation.resolve_device("cuda")
    assert segmentation.choose_precision(device) == expected
    assert name in segmentation.describe_device(device)
    assert segmentation.choose_precision(device, "fp32") == "fp32"
    scaler = segmentation.make_grad_scaler(expected)
    assert (scaler is not None) == (expected == "fp16")  # fp16 trains with a gradient scaler


def test_bf16_is_refused_on_a_card_without_it(monkeypatch):
    FakeCuda(monkeypatch, (7, 5), "Tesla T4")
    with pytest.raises(ValueError, match="Tesla T4.*no native bf16"):
        segmentation.choose_precision(segmentation.resolve_device("cuda"), "bf16")


def test_cpu_trains_in_fp32_whatever_the_gpu_question_says(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert segmentation.choose_precision(torch.device("cpu")) == "fp32"
    assert segmentation.resolve_device(None) == torch.device("cpu") or torch.cuda.is_available()


def test_scaler_path_scales_steps_and_skips_an_overflow(data):
    """fp16's path through train_step: loss scaled before backward, a step whose gradients
    overflowed skipped and the scale lowered (the scaler on the CPU, as the GPU's works)."""
    GradScaler = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if GradScaler is None:
        pytest.skip("this torch has no device-independent GradScaler")
    torch.manual_seed(0)
    model = get_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = GradScaler("cpu", init_scale=2.0 ** 10)
    images, masks = data[0].batch(range(4))
    before = [p.detach().clone() for p in model.parameters()]
    loss = segmentation.train_step(model, optimizer, images, masks, "fp32", scaler)
    assert loss > 0 and scaler.get_scale() == 2.0 ** 10
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    after_good_step = [p.detach().clone() for p in model.parameters()]
    bad = images.clone()
    bad[0, 0, 0, 0] = float("inf")  # the forward pass overflows: gradients are not finite
    segmentation.train_step(model, optimizer, bad, masks, "fp32", scaler)
    assert scaler.get_scale() == 2.0 ** 9
    assert all(torch.equal(a, b) for a, b in zip(after_good_step, model.parameters()))


@pytest.mark.parametrize("main, args, explained", [
    (segmentation.main, ["train"], [
        "--seed", "seeds the decoder's initialisation", "--val-fraction",
        "hold out this last share", "(default: 0.0)", "--precision", "(default: auto)",
        "--restart", "discard an interrupted run", "--lr", "(default: 0.001)",
        "(default: 14.5 passes over the data, within 3,000-6,000 steps)"]),
    (predict_tool.main, [], ["a photo (any size; grey or colour), or a folder",
                             "the checkpoint to load (default: segmentation_model.pth)"])])
def test_every_option_has_help_and_shows_its_default(main, args, explained, capsys):
    with pytest.raises(SystemExit):
        main([*args, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in explained:
        assert words in text


def test_a_rerun_without_resume_keeps_the_interrupted_state(tmp_path, monkeypatch):
    data, out = _interrupted_run(tmp_path, monkeypatch)
    state = out.with_name(out.name + ".state")
    saved = state.read_bytes()
    options = dict(epochs=2, encoder_weights=None, out_path=out, image_size=SIZE, verbose=False)
    with pytest.raises(segmentation.InterruptedRunError) as info:
        train_model(data, **options)
    assert str(state) in str(info.value) and "--resume" in str(info.value)
    assert "--restart" in str(info.value)
    assert state.read_bytes() == saved and not out.exists()
    with pytest.raises(ValueError, match="resume or restart"):
        train_model(data, resume=True, restart=True, **options)
    train_model(data, restart=True, **options)  # the explicit word: discard it, start anew
    assert out.exists() and not state.exists()


def test_the_train_command_stops_and_names_resume_and_restart(tmp_path, monkeypatch, capsys):
    data, out = _interrupted_run(tmp_path, monkeypatch)
    state = out.with_name(out.name + ".state")
    saved = state.read_bytes()
    assert segmentation.main(["train", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--resume" in err and "--restart" in err
    assert state.read_bytes() == saved
    with pytest.raises(SystemExit) as info:  # one or the other: a usage error
        segmentation.main(["train", str(data), "--resume", "--restart"])
    assert info.value.code == 2 and "not allowed with argument --resume" in capsys.readouterr().err


@pytest.mark.parametrize("state_saved", [False, True])
def test_ctrl_c_suggests_resume_only_when_something_was_saved(tmp_path, monkeypatch, capsys,
                                                              state_saved):
    out = tmp_path / "m.pth"
    if state_saved:
        out.with_name("m.pth.state").write_bytes(b"a saved state")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(segmentation, "train_model", interrupted)
    assert segmentation.main(["train", str(tmp_path), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert ("--resume" in err) == state_saved
    assert ("nothing was saved" in err) == (not state_saved)


def test_a_data_error_comes_before_any_word_about_the_checkpoint(tmp_path, capsys):
    data = make_dataset(tmp_path / "train", per_class=2)
    (data / "images" / "a" / "000.jpg").write_bytes(b"not a photo")
    out = tmp_path / "segmentation_model.pth"
    out.write_bytes(b"the user's own model")
    assert segmentation.main(["train", str(data), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "000.jpg" in captured.err and "cannot be read" in captured.err
    assert str(out) not in captured.out and "kept" not in captured.out
    assert out.read_bytes() == b"the user's own model"


def test_train_one_level_too_high_names_the_folder_to_give(tmp_path, capsys):
    data = tmp_path / "public_data"
    make_dataset(data / "train", per_class=2)
    assert segmentation.main(["train", str(data)]) == 1
    err = capsys.readouterr().err
    assert f"but {data / 'train'} does: give that folder" in err
    examples = tmp_path / "examples"
    make_dataset(examples / "test", per_class=2)
    with pytest.raises(segmentation.DataError, match=f"{examples / 'test'}"):
        segmentation.find_pairs(examples)
