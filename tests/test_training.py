"""Training: it learns, it is reproducible, it resumes, and it never overwrites silently."""

from __future__ import annotations

import time

import pytest
import torch

import segmentation
from conftest import SHARED_WEIGHTS, make_dataset, needs_shared
from segmentation import SegmentationData, evaluate_batches, fit, get_model, train_model

SIZE = 64  # tiny images keep these runs to seconds on a CPU


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    train = SegmentationData(make_dataset(root / "train", per_class=16, seed=0), SIZE)
    val = SegmentationData(make_dataset(root / "val", per_class=6, seed=1), SIZE)
    return train, val


def _fit(data, epochs=1, **options):
    torch.manual_seed(0)
    model = get_model()
    history = fit(model, data[0], data[1], epochs=epochs, batch_size=8, lr=3e-3, verbose=False,
                  **options)
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


def test_train_model_resumes_beside_an_existing_checkpoint(tmp_path, monkeypatch):
    """Killed mid-run, resumed by the same call: same weights, the user's file untouched."""
    data = make_dataset(tmp_path / "train", per_class=3)
    out = tmp_path / "segmentation_model.pth"
    out.write_bytes(b"the user's own model")
    options = dict(epochs=2, encoder_weights=None, out_path=out, image_size=SIZE, verbose=False)
    uninterrupted = train_model(data, **{**options, "out_path": None})
    real_save = segmentation.save_atomic

    def die_after_first_epoch(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt
    monkeypatch.setattr(segmentation, "save_atomic", die_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_model(data, **options)
    monkeypatch.setattr(segmentation, "save_atomic", real_save)
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
    double.images, double.masks = data[0].images.repeat(2, 1, 1, 1), data[0].masks.repeat(2, 1, 1, 1)
    _, history = _fit((double, data[1]), epochs=None, steps=5)
    assert history[-1]["steps"] == 5 and len(history) == 1  # 8 batches a pass
    _, history = _fit(data, epochs=2)  # epochs still asks for whole passes
    assert [h["steps"] for h in history] == [4, 8]


def test_frozen_layers_do_not_change(data):
    torch.manual_seed(0)
    before = get_model()
    model, _ = _fit(data, frozen_layers=4)
    after, start = model.encoder.features, before.encoder.features
    for i in range(4):  # weights and batch-norm statistics both kept
        for (key, a), b in zip(start[i].state_dict().items(), after[i].state_dict().values()):
            assert torch.equal(a, b), (i, key)
    assert not torch.equal(start[4].state_dict()["conv.0.0.weight"],
                           after[4].state_dict()["conv.0.0.weight"])


def test_early_steps_train_on_smaller_windows(data, monkeypatch):
    """Progressive resizing: the first early_fraction of the steps uses early_crop_size windows."""
    windows = []
    batch = SegmentationData.batch

    def recording_batch(self, indices, generator=None, augment=False, crop_size=None, **kwargs):
        images, masks = batch(self, indices, generator, augment, crop_size, **kwargs)
        if augment:  # training batches, not the validation pass
            windows.append(images.shape[-1])
        return images, masks

    monkeypatch.setattr(SegmentationData, "batch", recording_batch)
    _fit(data, epochs=None, steps=6, crop_size=48, early_crop_size=32, early_fraction=0.5)
    assert windows == [32, 32, 32, 48, 48, 48]


def test_train_model_says_what_it_will_do_before_the_first_step(tmp_path, capsys):
    data = make_dataset(tmp_path / "train", per_class=3)
    train_model(data, steps=2, encoder_weights=None, out_path=None, image_size=SIZE)
    printed = capsys.readouterr().out.splitlines()
    loaded = next(i for i, line in enumerate(printed) if line.startswith("loaded 6 training"))
    plan = next(i for i, line in enumerate(printed) if line.startswith("training 2 steps"))
    first_epoch = next(i for i, line in enumerate(printed) if line.startswith("epoch"))
    assert loaded < plan < first_epoch
    assert "expect about" in printed[plan] and "a step of 16 images takes" in printed[plan]


def test_step_estimate_counts_the_augmentation(data, monkeypatch):
    """The plan's step time includes making the augmented batch on the CPU (on a GPU that costs
    more than the step itself), and measuring it leaves the global random state alone."""
    batch = SegmentationData.batch

    def slow_batch(self, *args, **kwargs):
        time.sleep(0.3)
        return batch(self, *args, **kwargs)

    model = get_model()
    quick = segmentation.estimate_step_seconds(model, data[0], 8, 48, frozen_layers=0)
    monkeypatch.setattr(SegmentationData, "batch", slow_batch)
    rng = torch.get_rng_state()
    slow = segmentation.estimate_step_seconds(model, data[0], 8, 48, frozen_layers=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert slow >= 0.3 > quick, (quick, slow)


def test_train_command_fast_recipe(monkeypatch):
    """`train --fast` passes the fast recipe, --steps still sets the length, plain `train` the
    defaults, --reflections the share of reflected images."""
    calls = []
    monkeypatch.setattr(segmentation, "train_model", lambda data, **kwargs: calls.append(kwargs))
    assert segmentation.main(["train", "data", "--fast"]) == 0
    assert segmentation.main(["train", "data", "--fast", "--steps", "5"]) == 0
    assert segmentation.main(["train", "data"]) == 0
    assert segmentation.main(["train", "data", "--reflections", "0.3"]) == 0
    fast, short, plain, water = calls
    assert {k: fast[k] for k in segmentation.FAST_RECIPE} == segmentation.FAST_RECIPE
    assert short["steps"] == 5 and short["frozen_layers"] == 4
    assert plain["steps"] == segmentation.TRAIN_DEFAULTS["steps"] and "frozen_layers" not in plain
    assert "reflection_prob" not in plain and water["reflection_prob"] == 0.3
