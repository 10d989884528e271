"""Shared fixtures: small synthetic data sets, and the stand-in data in ../shared when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data" / "public_data"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"
CHECKPOINT = ROOT / "segmentation_model.pth"


def synthetic_pair(rng: np.random.Generator, height: int, width: int):
    """A noisy background with one bright textured ellipse; returns (RGB uint8, bool mask)."""
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    ry, rx = rng.uniform(0.15, 0.35) * height, rng.uniform(0.15, 0.35) * width
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image = rng.normal(60, 25, (height, width, 3))
    image[mask] = rng.normal((200, 120, 60), 25, (mask.sum(), 3))
    return image.clip(0, 255).astype(np.uint8), mask


def make_dataset(root: Path, classes=("a", "b"), per_class: int = 4, seed: int = 0,
                 size=(48, 64)) -> Path:
    """Write `root/{images,gt}/<class>/<name>.{jpg,png}` with synthetic pairs; returns root."""
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        (root / "gt" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image, mask = synthetic_pair(rng, *size)
            Image.fromarray(image).save(root / "images" / cls / f"{i:03d}.jpg", quality=95)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "gt" / cls / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "train")


def needs_shared(path: Path):
    """Skip, saying in a student's words what is missing, where the maintainers' stand-in data
    or offline weights (../shared, never part of the package) are absent."""
    what = {SHARED_DATA: "the maintainers' stand-in data set",
            SHARED_WEIGHTS: "the maintainers' offline copy of the ImageNet weights"}
    what = what.get(path, str(path))
    return pytest.mark.skipif(not path.exists(), reason=f"needs {what}, which is not part of the "
                              f"package and which a student does not need ({path} not found)")

