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
from conftest import CHECKPOINT, ROOT, SHARED_DATA, needs_shared, synthetic_pair
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


def _broken_checkpoints(folder):
    """{kind: path} of checkpoint files a student might end up with, each broken its own way."""
    good = folder / "good.pth"
    torch.save(get_model().state_dict(), good)
    wrong = get_model().state_dict()
    wrong.pop("head.bias")
    wrong["head.weight"] = torch.zeros(2, 16, 1, 1)
    made = {"text": b"hello, this is not a model\n", "empty": b"",
            "truncated": good.read_bytes()[:100_000]}
    for kind, content in made.items():
        (folder / f"{kind}.pth").write_bytes(content)
    torch.save(get_model(), folder / "pickled.pth")
    torch.save({"model": get_model().state_dict(), "optimizer": {}, "epoch": 3}, folder / "state.pth")
    torch.save([1, 2], folder / "list.pth")
    torch.save(wrong, folder / "wrong.pth")
    return {kind: folder / f"{kind}.pth" for kind in
            ("text", "empty", "truncated", "pickled", "state", "list", "wrong")}


# Each kind of broken checkpoint and the words its message must contain.
CHECKPOINT_MESSAGES = {
    "text": "not a PyTorch checkpoint (it begins b'hello",
    "empty": "the file is empty",
    "truncated": "damaged or incomplete",
    "pickled": "pickled",
    "state": "entries model, optimizer, epoch are not tensors",
    "list": "holds a list, not a state_dict",
    "wrong": "does not fit get_model(): missing keys: 1 (head.bias); other shapes: 1 (head.weight",
}


@pytest.mark.parametrize("kind", list(CHECKPOINT_MESSAGES))
def test_each_broken_checkpoint_gets_its_own_message(tmp_path, kind):
    path = _broken_checkpoints(tmp_path)[kind]
    with pytest.raises(ValueError) as info:
        segmentation.load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and CHECKPOINT_MESSAGES[kind] in message
    others = [words for other, words in CHECKPOINT_MESSAGES.items() if other != kind]
    assert not any(words in message for words in others), message
    # Short, on one line, no terminal codes, and never torch's advice to unpickle unsafely.
    assert "\n" not in message and "\x1b" not in message and "weights_only" not in message
    assert len(message) < 400


def test_a_good_checkpoint_in_either_torch_format_loads(tmp_path):
    state = get_model().state_dict()
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("zip.pth", "legacy.pth"):
        loaded = segmentation.load_model(tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.values()))


def test_predict_command_reports_a_broken_checkpoint_in_one_line(tmp_path, capsys):
    path = _broken_checkpoints(tmp_path)["text"]
    photo = tmp_path / "photo.jpg"
    Image.fromarray(synthetic_pair(np.random.default_rng(0), 30, 40)[0]).save(photo)
    assert segmentation.main(["predict", str(photo), "--model", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a PyTorch checkpoint" in err[0] and "weights_only" not in err[0]


def test_short_message_cuts_at_a_word_and_drops_colour_codes():
    text = "\x1b[1mbold\x1b[0m words " + "lengthy " * 60
    short = segmentation.short_message(text, limit=50)
    assert short.startswith("bold words lengthy") and short.endswith(" ...")
    assert all(word in ("bold", "words", "lengthy", "...") for word in short.split())


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
               "hashlib", "inspect", "json", "math", "os", "platform", "random", "re", "sys",
               "time", "pathlib", "typing", "zipfile"}
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


def test_predict_command_draws_the_overlay_and_keeps_earlier_outputs(model, tmp_path, capsys):
    rgb, _ = synthetic_pair(np.random.default_rng(2), 40, 60)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(photo)
    checkpoint = tmp_path / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    assert segmentation.main(["predict", str(photo), "--model", str(checkpoint), "--overlay"]) == 0
    mask = np.asarray(Image.open(tmp_path / "photo.mask.png"))
    drawn = np.asarray(Image.open(tmp_path / "photo.overlay.png"))
    assert mask.shape == (40, 60) and set(np.unique(mask)) <= {0, 255}
    assert drawn.shape == (40, 60, 3)
    expected = segmentation.overlay(segmentation.read_image(photo), mask > 127)
    np.testing.assert_array_equal(drawn, expected)
    (tmp_path / "photo.mask.png").write_bytes(b"the user's file")
    assert segmentation.main(["predict", str(photo), "--model", str(checkpoint), "--overlay"]) == 0
    assert (tmp_path / "photo.mask.png").read_bytes() == b"the user's file"
    assert (tmp_path / "photo.mask-1.png").exists() and (tmp_path / "photo.overlay-1.png").exists()
    assert "photo.mask-1.png" in capsys.readouterr().out


def test_overlay_tints_the_object_and_outlines_it():
    image = np.full((9, 9, 3), 100, np.uint8)
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    drawn = segmentation.overlay(image, mask)
    assert (drawn[0, 0] == 100).all()                       # background untouched
    assert tuple(drawn[2, 4]) == (255, 255, 0)              # the outline
    assert drawn[4, 4, 1] > 100 and drawn[4, 4, 0] < 100    # inside: tinted green


def test_predict_command_on_a_folder_masks_every_photo(model, tmp_path, capsys):
    """A folder: a mask for each photo in it and its subfolders, a summary; an unreadable file
    is named and skipped; a rerun skips the masks it wrote and keeps them."""
    folder = tmp_path / "photos"
    rng = np.random.default_rng(3)
    for name in ("a/one.jpg", "a/two.png", "b/deeper/three.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_pair(rng, 30, 44)[0]).save(folder / name)
    (folder / "a" / "notes.jpg").write_text("not a photo")
    checkpoint = tmp_path / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    assert segmentation.main(["predict", str(folder), "--model", str(checkpoint)]) == 1
    captured = capsys.readouterr()
    for name in ("a/one", "a/two", "b/deeper/three"):
        mask = np.asarray(Image.open(folder / f"{name}.mask.png"))
        assert mask.shape == (30, 44) and set(np.unique(mask)) <= {0, 255}
    assert "predicting 4 photos" in captured.out and "wrote 3 masks beside the photos" in captured.out
    assert "notes.jpg" in captured.err and "cannot be read" in captured.err
    (folder / "a" / "notes.jpg").unlink()
    out = tmp_path / "masks"
    assert segmentation.main(["predict", str(folder), "--model", str(checkpoint), "--out", str(out)]) == 0
    assert "predicting 3 photos" in capsys.readouterr().out  # its own masks are not photos
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/one.png", "a/two.png", "b/deeper/three.png"]


def test_predict_command_on_a_folder_without_photos_says_so(model, tmp_path, capsys):
    checkpoint = tmp_path / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    (tmp_path / "empty").mkdir()
    assert segmentation.main(["predict", str(tmp_path / "empty"), "--model", str(checkpoint)]) == 1
    assert "no photos in it or its subfolders" in capsys.readouterr().err
