"""Not one number moves: a few training steps on the bundled examples give the same weights, and
predict the same probabilities, to the last bit, as the code gave when the digests in
same_numbers.json were recorded (before the redesign of issue 45).

A change that is meant to move numbers (a recipe change) records new digests in the same commit:

    .venv/bin/python tests/test_same_numbers.py --record
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import torch

from conftest import ROOT, SHARED_WEIGHTS

import segmentation

EXAMPLES = ROOT / "examples" / "test"
DIGESTS = ROOT / "tests" / "same_numbers.json"
ENCODERS = {"random-encoder": None, "imagenet-encoder": SHARED_WEIGHTS}


def run_digest(encoder_weights, tmp_path) -> str:
    """SHA-256 of the weights that 4 steps of train_model on the examples give (the default
    recipe at 128-pixel photos and 96-pixel windows, to be quick; seed 0, one thread), and of
    predict's probabilities for one example photo with them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a sum over threads may be added up in another order
    try:
        model = segmentation.train_model(EXAMPLES, steps=4, image_size=128, crop_size=96,
                                         encoder_weights=encoder_weights,
                                         out_path=tmp_path / "model.pth", verbose=False)
        photo = sorted((EXAMPLES / "images").glob("*/*.jpg"))[0]
        probabilities = segmentation.predict(model, photo)
    finally:
        torch.set_num_threads(threads)
    digest = hashlib.sha256()
    for key, value in torch.load(tmp_path / "model.pth", map_location="cpu").items():
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    digest.update(probabilities.tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", list(ENCODERS))
def test_the_same_seed_trains_the_recorded_weights(name, tmp_path):
    recorded = json.loads(DIGESTS.read_text())
    if recorded["torch"] != torch.__version__:
        pytest.skip(f"the digests were recorded with torch {recorded['torch']}, this is "
                    f"{torch.__version__}: bits differ between versions")
    if ENCODERS[name] is not None and not ENCODERS[name].exists():
        pytest.skip(f"needs {ENCODERS[name]}")
    assert run_digest(ENCODERS[name], tmp_path) == recorded["digests"][name], (
        f"{name}: the weights or predictions moved since {recorded['recorded_at']}")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import subprocess
    import tempfile
    from pathlib import Path
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        digests = {name: run_digest(weights, Path(folder) / name)
                   for name, weights in ENCODERS.items()}
    DIGESTS.write_text(json.dumps({"torch": torch.__version__, "recorded_at": f"commit {commit}",
                                   "digests": digests}, indent=1) + "\n")
    print(DIGESTS.read_text())
