"""Not one number moves: 4 steps of the default recipe on the bundled examples give the weights
and probabilities recorded in same_numbers.json (lab/same_numbers.py says how, and records them
anew after a change meant to move numbers: python -m lab.same_numbers --record).

On any machine the fingerprint must agree within a tolerance that another CPU stays inside and a
moved default does not; on the machine and torch that recorded it, the SHA-256 must agree too.
"""

from __future__ import annotations

import json

import pytest

import segmentation
from lab import same_numbers as pins

RECORDED = json.loads(pins.RECORD.read_text())


@pytest.fixture(scope="module")
def runs():
    """Each encoder's short run here, trained once for the module: its fingerprint and digest."""
    made = {}

    def run(name):
        if name not in made:
            weights = pins.ENCODERS[name]
            if weights is not None and not weights.exists():
                pytest.skip(f"needs {weights}")
            made.update(pins.measure({name: weights}))
        return made[name]
    return run


@pytest.mark.parametrize("name", list(pins.ENCODERS))
def test_the_same_seed_trains_the_recorded_numbers_on_any_machine(name, runs):
    figures = runs(name)["fingerprint"]
    off = pins.beyond_tolerance(figures, RECORDED["runs"][name]["fingerprint"])
    assert not off, (f"{name}: the numbers moved since {RECORDED['recorded_at']}:\n  "
                     + "\n  ".join(off))


@pytest.mark.parametrize("name", list(pins.ENCODERS))
def test_the_same_seed_trains_the_recorded_bits_on_the_recording_machine(name, runs):
    if pins.machine() != RECORDED["machine"]:
        pytest.skip(f"the digests were recorded on {RECORDED['machine']}, this is "
                    f"{pins.machine()}: other vector units add up in another order")
    assert runs(name)["digest"] == RECORDED["runs"][name]["digest"], (
        f"{name}: the weights or predictions moved since {RECORDED['recorded_at']}")


@pytest.mark.parametrize("change", [{"lr": segmentation.Config.lr * 1.001}, {"steps": 5},
                                    {"seed": 1}], ids=["lr+0.1%", "one more step", "seed 1"])
def test_a_moved_default_is_caught(change):
    figures = pins.measure({"random-encoder": None}, **change)["random-encoder"]["fingerprint"]
    assert pins.beyond_tolerance(figures, RECORDED["runs"]["random-encoder"]["fingerprint"])


def test_the_tolerance_tells_a_figure_off_by_more_from_one_within_it():
    recorded = {"head update q95": 0.0015, "probability mean": 0.48}
    update, probability = pins.TOLERANCE["update"], pins.TOLERANCE["probability"]
    within = {"head update q95": 0.0015 * (1 + update / 2),
              "probability mean": 0.48 * (1 - probability / 2)}
    assert pins.beyond_tolerance(within, recorded) == []
    off = {"head update q95": 0.0015, "probability mean": 0.48 * (1 + 2 * probability)}
    assert [line.split(":")[0] for line in pins.beyond_tolerance(off, recorded)] == [
        "probability mean"]


def test_the_record_names_the_machine_and_torch_of_its_digests():
    assert set(RECORDED["machine"]) == {"torch", "cpu_capability", "cpu"}
    assert RECORDED["short_run"] == pins.SHORT_RUN
