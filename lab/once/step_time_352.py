"""The step time of the 352/288 candidate against the default's 288/224 (2026-12-06), on the 600
cub.bird pairs, with the yardstick before and after: lab/results/birds/logs/step-time-352.md.

    OMP_NUM_THREADS=2 python -m lab.once.step_time_352
"""

import tempfile
import time
from pathlib import Path

import segmentation as seg
from lab.benchmark import reference_step_ms
from lab.validate import linked_pairs

DATA = Path("../shared/data/public_data")

train = [p for p in seg.find_pairs(DATA / "train") if p[2] == "cub.bird"]
with tempfile.TemporaryDirectory() as folder:
    root = linked_pairs(DATA / "train", train, Path(folder) / "train")
    print("yardstick", reference_step_ms(), flush=True)
    for size, crop in [(288, 224), (352, 288), (288, 224), (352, 288)]:
        for steps in (10, 40):
            start = time.time()
            seg.train_model(root, out_path=Path(folder) / f"m{size}{steps}.pth", steps=steps,
                            image_size=size, crop_size=crop, verbose=False)
            print(size, crop, steps, round(time.time() - start, 1), flush=True)
    print("yardstick", reference_step_ms(), flush=True)
