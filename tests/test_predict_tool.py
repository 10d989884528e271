"""tools/predict.py: masks (and overlays) for a photo or a folder of photos, never replacing
what is there, and a broken checkpoint named in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_pair
from segmentation import get_model, read_image
from test_checkpoint import _broken_checkpoints
from tools import predict as tool
from tools.report import COLOURS, paint


@pytest.fixture(scope="module")
def model():
    """An untrained model: what is written does not depend on the weights."""
    torch.manual_seed(0)
    return get_model()


def test_predict_command_reports_a_broken_checkpoint_in_one_line(tmp_path, capsys):
    path = _broken_checkpoints(tmp_path)["text"]
    photo = tmp_path / "photo.jpg"
    Image.fromarray(synthetic_pair(np.random.default_rng(0), 30, 40)[0]).save(photo)
    assert tool.main([str(photo), "--model", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a PyTorch checkpoint" in err[0] and "weights_only" not in err[0]


def test_predict_command_draws_the_overlay_and_keeps_earlier_outputs(model, tmp_path, capsys):
    rgb, _ = synthetic_pair(np.random.default_rng(2), 40, 60)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(photo)
    checkpoint = tmp_path / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    assert tool.main([str(photo), "--model", str(checkpoint), "--overlay"]) == 0
    mask = np.asarray(Image.open(tmp_path / "photo.mask.png"))
    drawn = np.asarray(Image.open(tmp_path / "photo.overlay.png"))
    assert mask.shape == (40, 60) and set(np.unique(mask)) <= {0, 255}
    assert drawn.shape == (40, 60, 3)
    expected = paint(read_image(photo), mask > 127)
    np.testing.assert_array_equal(drawn, expected)
    (tmp_path / "photo.mask.png").write_bytes(b"the user's file")
    assert tool.main([str(photo), "--model", str(checkpoint), "--overlay"]) == 0
    assert (tmp_path / "photo.mask.png").read_bytes() == b"the user's file"
    assert (tmp_path / "photo.mask-1.png").exists() and (tmp_path / "photo.overlay-1.png").exists()
    assert "photo.mask-1.png" in capsys.readouterr().out


def test_the_overlay_paints_the_prediction_in_the_reports_colour_for_an_object_found():
    image = np.full((9, 9, 3), 100, np.uint8)
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    drawn = paint(image, mask).astype(int)
    found, _ = COLOURS["tp"]
    assert (drawn[0, 0] == drawn[0, 0, 0]).all()                     # background: grey
    assert np.abs(drawn[4, 4] - np.array(found)).max() < 0.5 * 255    # inside: the colour
    assert np.argmax(drawn[4, 4]) == np.argmax(found)


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
    assert tool.main([str(folder), "--model", str(checkpoint)]) == 1
    captured = capsys.readouterr()
    for name in ("a/one", "a/two", "b/deeper/three"):
        mask = np.asarray(Image.open(folder / f"{name}.mask.png"))
        assert mask.shape == (30, 44) and set(np.unique(mask)) <= {0, 255}
    assert "predicting 4 photos" in captured.out
    assert "wrote 3 masks beside the photos" in captured.out
    assert "notes.jpg" in captured.err and "cannot be read" in captured.err
    (folder / "a" / "notes.jpg").unlink()
    out = tmp_path / "masks"
    assert tool.main([str(folder), "--model", str(checkpoint), "--out", str(out)]) == 0
    assert "predicting 3 photos" in capsys.readouterr().out  # its own masks are not photos
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/one.png", "a/two.png", "b/deeper/three.png"]


def test_predict_command_on_a_folder_without_photos_says_so(model, tmp_path, capsys):
    checkpoint = tmp_path / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    (tmp_path / "empty").mkdir()
    assert tool.main([str(tmp_path / "empty"), "--model", str(checkpoint)]) == 1
    assert "no photos in it or its subfolders" in capsys.readouterr().err
