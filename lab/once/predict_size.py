"""The bird-only default's three checkpoints predicted at 256/288/320/352 pixels (2026-12-06):
writes lab/results/birds/predict-size.json (summarised in predict-size.md beside it).

    OMP_NUM_THREADS=1 python -m lab.once.predict_size
"""

import json
import time
from pathlib import Path

import torch

import segmentation as seg
from lab.birds import grade

DATA = Path("../shared/data/public_data")
RUNS = Path("lab/results/birds")

test = [p for p in seg.find_pairs(DATA / "test") if p[2] == "cub.bird"]
out = {}
for name in ["D0-default-600pairs-seed0", "D1-default-600pairs-seed1",
             "D2-default-600pairs-seed2"]:
    model = seg.get_model()
    model.load_state_dict(torch.load(RUNS / "models" / f"{name}.pth", map_location="cpu"))
    for size in (288, 320, 352, 256):
        start = time.time()
        graded = grade(model, test, size)
        out.setdefault(name, {})[size] = {k: v for k, v in graded.items() if k != "per_image"}
        print(name, size, round(graded["iou"], 4), round(graded["smaller_half_iou"], 4),
              round(graded["larger_half_iou"], 4), round(time.time() - start), flush=True)
(RUNS / "predict-size.json").write_text(json.dumps(out, indent=1))
