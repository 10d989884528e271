"""The grader's contract: get_model() + strict load, and predict() on every kind of image."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import segmentation
from conftest import CHECKPOINT, synthetic_pair
from segmentation import DataError, get_model, predict


@pytest.fixture(scope="module")
def model():
    """An untrained model: the contract does not depend on the weights."""
    torch.manual_seed(0)
    return get_model()


def _image(mode: str, size=(57, 41)) -> Image.Image:
    """A synthetic photo in the given PIL mode (high bit depths span more than 0..255)."""
    rgb, _ = synthetic_pair(np.random.default_rng(1), size[1], size[0])
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray(grey.astype(dtype) * 200)
    if mode == "P-transparent":
        image = Image.fromarray(rgb).convert("P")
        image.info["transparency"] = 0
        return image
    return Image.fromarray(rgb).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "LA", "P", "P-transparent", "RGBA", "CMYK",
                                  "I;16", "I", "F"])
def test_predict_every_mode(model, tmp_path, mode):
    image = _image(mode)
    suffix = ".tif" if mode in ("I;16", "I", "F", "CMYK") else ".png"
    path = tmp_path / f"image{suffix}"
    image.save(path)
    out = predict(model, str(path))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (41, 57)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size", [(1, 1), (3, 500), (333, 77)])
def test_predict_sizes(model, tmp_path, size):
    path = tmp_path / "odd.jpg"
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    assert predict(model, path).shape == (size[1], size[0])


def test_predict_sets_eval_and_no_grad(model, tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(synthetic_pair(np.random.default_rng(2), 64, 80)[0]).save(path)
    model.eval()
    expected = predict(model, path)
    model.train()  # the grader never calls eval(): predict must, or batch norm uses batch stats
    got = predict(model, path)
    assert not model.training
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"", "empty"),
                                              (b"not an image at all", "cannot be read")])
def test_predict_bad_files_name_the_file(model, tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        predict(model, path)
    assert str(path) in str(info.value)


def test_predict_truncated_jpeg(model, tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(synthetic_pair(np.random.default_rng(3), 200, 300)[0]).save(path)
    path.write_bytes(path.read_bytes()[:800])
    with pytest.raises(DataError, match="cannot be read") as info:
        predict(model, path)
    assert str(path) in str(info.value)


def test_get_model_downloads_nothing(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("get_model() tried to download weights")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    assert isinstance(get_model(), torch.nn.Module)


def test_get_model_with_old_torchvision_builder(monkeypatch):
    """torchvision 0.11's builder was mobilenet_v2(pretrained=False, progress=True, **kwargs)."""
    real = torchvision.models.mobilenet_v2

    def old_builder(pretrained=False, progress=True, **kwargs):
        assert "weights" not in kwargs, "torchvision 0.11 has no weights= argument"
        assert not pretrained
        return real(**kwargs)
    monkeypatch.setattr(torchvision.models, "mobilenet_v2", old_builder)
    model = get_model()
    assert set(model.state_dict()) == set(segmentation.get_model().state_dict())


def test_module_level_imports_are_the_allowed_ones():
    allowed = {"torch", "torchvision", "numpy", "PIL", "skimage", "__future__", "argparse", "copy",
               "dataclasses", "hashlib", "json", "math", "os", "platform", "random", "sys",
               "time", "pathlib", "typing"}
    tree = ast.parse(inspect.getsource(segmentation))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module.split(".")[0])
    assert names <= allowed, f"segmentation.py imports {names - allowed} at module level"


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="no shipped segmentation_model.pth")
class TestShippedCheckpoint:
    def test_loads_strictly_the_graders_way(self):
        state = torch.load(str(CHECKPOINT), map_location="cpu")
        assert type(state).__name__ in ("dict", "OrderedDict")
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        model = get_model()
        model.load_state_dict(state)  # strict by default, as the grader calls it

    def test_has_no_denormal_weights(self):
        state = torch.load(str(CHECKPOINT), map_location="cpu")
        tiny = torch.finfo(torch.float32).tiny
        for key, value in state.items():
            if value.is_floating_point():
                assert not ((value != 0) & (value.abs() < tiny)).any(), key

    def test_size_limit(self):
        assert CHECKPOINT.stat().st_size <= 15 * 2**20


def test_predict_huge_photo(model, tmp_path):
    """6000x4000: processed at the model's size, answered at the photo's."""
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 4000), (90, 140, 200)).save(path)
    out = predict(model, path)
    assert out.shape == (4000, 6000) and out.dtype == np.float32
