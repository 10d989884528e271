"""The data loader: layout checks that report every problem, and the real data's oddities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_dataset
from segmentation import (DataError, SegmentationData, augment_batch, find_pairs,
                          read_image, read_mask, split_indices)


def test_find_pairs(tiny_data):
    pairs = find_pairs(tiny_data)
    assert len(pairs) == 8
    assert {cls for _, _, cls in pairs} == {"a", "b"}
    assert all(m.parent.parent.name == "gt" and m.stem == i.stem for i, m, _ in pairs)


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="images: folder not found"):
        find_pairs(tmp_path)
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "gt").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_pairs(tmp_path)


def test_all_layout_problems_reported_at_once(tiny_data):
    orphan_image = tiny_data / "gt" / "a" / "000.png"
    orphan_image.unlink()
    orphan_mask = tiny_data / "images" / "b" / "001.jpg"
    orphan_mask.unlink()
    with pytest.raises(DataError) as info:
        find_pairs(tiny_data)
    message = str(info.value)
    assert "2 problem(s)" in message
    assert str(tiny_data / "images" / "a" / "000.jpg") in message and "no mask" in message
    assert str(tiny_data / "gt" / "b" / "001.png") in message and "without an image" in message


def test_unreadable_and_mismatched_files_reported_at_once(tiny_data):
    broken = tiny_data / "images" / "a" / "001.jpg"
    broken.write_bytes(b"garbage")
    wrong_size = tiny_data / "gt" / "b" / "002.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(wrong_size)
    with pytest.raises(DataError) as info:
        SegmentationData(tiny_data, image_size=32)
    message = str(info.value)
    assert "2 problem(s)" in message
    assert str(broken) in message and str(wrong_size) in message and "10x10" in message


def test_real_data_oddities(tmp_path):
    """Files named .jpg that are GIF or PNG, palette/RGBA/grey photos, an empty mask."""
    root = make_dataset(tmp_path / "d", classes=("a",), per_class=4, size=(30, 40))
    images = sorted((root / "images" / "a").glob("*.jpg"))
    rgb = np.asarray(Image.open(images[0]))
    Image.fromarray(rgb).convert("P").save(images[0], format="GIF")
    Image.fromarray(rgb).convert("RGBA").save(images[1], format="PNG")
    Image.fromarray(rgb).convert("L").save(images[2], format="JPEG")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "gt" / "a" / "003.png")
    data = SegmentationData(root, image_size=32)
    assert data.images.shape == (4, 3, 32, 32) and data.masks.shape == (4, 1, 32, 32)
    grey = read_image(images[2])
    assert grey.shape == (30, 40, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert not read_mask(root / "gt" / "a" / "003.png").any()
    images_batch, masks_batch = data.batch([0, 3])
    assert masks_batch[1].sum() == 0 and images_batch.dtype.is_floating_point


@pytest.mark.parametrize("crop_size, expected", [(None, 64), (48, 48), (100, 64)])
def test_augmented_batch_keeps_image_and_mask_aligned(tmp_path, crop_size, expected):
    """A mask drawn as a white square on a black image must still cover the white pixels,
    in training windows of crop_size (never larger than the stored images)."""
    root = tmp_path / "d"
    (root / "images" / "a").mkdir(parents=True)
    (root / "gt" / "a").mkdir(parents=True)
    mask = np.zeros((64, 64), bool)
    mask[10:40, 20:50] = True
    rgb = np.repeat(mask[:, :, None] * 255, 3, 2).astype(np.uint8)
    Image.fromarray(rgb).save(root / "images" / "a" / "x.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "gt" / "a" / "x.png")
    data = SegmentationData(root, image_size=64)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        images, masks = data.batch([0], generator, augment=True, crop_size=crop_size)
        assert images.shape[-2:] == masks.shape[-2:] == (expected, expected)
        bright = images[0].mean(0) > images[0].mean()
        assert (bright == (masks[0, 0] > 0.5)).float().mean() > 0.95


@pytest.mark.parametrize("min_crop_area", [0.15, 0.35])
def test_crops_cover_at_least_min_crop_area(min_crop_area):
    """A horizontal ramp as the 'mask' shows how wide each crop was: its span after the crop
    is the crop's width as a fraction of the image."""
    ramp = torch.linspace(0, 1, 200).expand(300, 1, 200, 200)
    generator = torch.Generator().manual_seed(0)
    _, crops = augment_batch(torch.rand(300, 3, 200, 200), ramp, generator, 100, min_crop_area)
    spans = (crops.amax(dim=(1, 2, 3)) - crops.amin(dim=(1, 2, 3))).tolist()
    # Width = sqrt(area * aspect) with aspect down to 3/4; a little slack for interpolation.
    assert min(spans) >= (min_crop_area * 3 / 4) ** 0.5 - 0.02
    assert min(spans) < (min_crop_area * 4 / 3) ** 0.5  # the smallest crops are actually drawn
    assert max(spans) > 0.95
    mirrored = [(c[0, 0, 0] > c[0, 0, -1]).item() for c in crops]
    assert 0.35 < sum(mirrored) / len(mirrored) < 0.65  # half of them mirrored


def _squares(n: int = 8, size: int = 64):
    """n white squares of different places and sizes on black, with their masks, in [0, 1]."""
    images, masks = torch.zeros(n, 3, size, size), torch.zeros(n, 1, size, size)
    for i in range(n):
        top, left, side = 4 + 3 * i, 30 - 3 * i, 12 + 2 * i
        images[i, :, top:top + side, left:left + side] = 1
        masks[i, :, top:top + side, left:left + side] = 1
    return images, masks


def test_augmented_batch_shapes_binary_masks_and_alignment():
    images, masks = _squares()
    out_images, out_masks = augment_batch(images, masks, torch.Generator().manual_seed(0), 48)
    assert out_images.shape == (8, 3, 48, 48) and out_masks.shape == (8, 1, 48, 48)
    assert 0 <= out_images.min() and out_images.max() <= 1
    binary = out_masks > 0.5
    for image, mask in zip(out_images, binary):
        bright = image.mean(0) > image.mean()  # the square after colour changes
        assert (bright == mask[0]).float().mean() > 0.95
    data = SegmentationData.__new__(SegmentationData)
    data.images, data.masks = (images * 255).byte(), (masks * 255).byte()
    _, batch_masks = data.batch(range(8), torch.Generator().manual_seed(0), augment=True,
                                crop_size=48)
    assert set(batch_masks.unique().tolist()) <= {0.0, 1.0}


def test_same_seed_same_batch_and_another_seed_another():
    images, masks = _squares()

    def run(seed):
        return augment_batch(images, masks, torch.Generator().manual_seed(seed), 48)
    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_grey_images_now_and_then():
    """One image in ten loses its colour: all three channels equal."""
    images = torch.rand(400, 3, 16, 16)
    out, _ = augment_batch(images, torch.zeros(400, 1, 16, 16), torch.Generator().manual_seed(0),
                           16)
    grey = ((out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) < 1e-6).float().mean().item()
    assert 0.05 < grey < 0.15


def test_split_holds_out_a_block_per_class(tiny_data):
    pairs = find_pairs(tiny_data)
    train, val = split_indices(pairs, 0.25)
    assert len(train) == 6 and len(val) == 2 and not set(train) & set(val)
    assert {pairs[i][0].stem for i in val} == {"003"}  # the last of each class in name order
    assert split_indices(pairs, 0.0) == (list(range(8)), [])
    data = SegmentationData(tiny_data, image_size=16)
    assert data.subset(val).pairs == [pairs[i] for i in val]
    assert (data.subset(val).images == data.images[val]).all()


def test_layout_and_content_problems_reported_together(tiny_data):
    (tiny_data / "gt" / "a" / "000.png").unlink()
    broken = tiny_data / "images" / "b" / "002.jpg"
    broken.write_bytes(b"")
    with pytest.raises(DataError) as info:
        SegmentationData(tiny_data, image_size=16)
    message = str(info.value)
    assert "2 problem(s)" in message and "no mask" in message
    assert f"{broken}: the file is empty" in message


def test_loading_reports_progress(tiny_data):
    seen = []
    data = SegmentationData(tiny_data, 32, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, len(data)) for i in range(len(data))]
