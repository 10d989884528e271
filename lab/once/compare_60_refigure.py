"""docs/birds-comparison.png redrawn from the masks of the 60-bird parts 1-3 run (2026-12-06),
with wrapped column titles; the numbers are the run's (its masks were in the run's --out folder).

    python -m lab.once.compare_60_refigure
"""

from pathlib import Path

import segmentation as seg
from lab import compare
from run_tests import find_test_folders

DATA = Path("../shared/data/public_data")
OUT = Path("lab/results/compare/birds-60")

_, gt = find_test_folders(DATA)
masks, scores = {}, {}
for name in ["encoder-decoder", "U-Net", "pretrained U-Net, same sample and budget",
             "the bird-only default (600 pairs, seed 2)"]:
    masks[name] = OUT / "masks" / name
    scores[name] = []
    for mask in sorted(masks[name].rglob("*.png")):
        key = mask.relative_to(masks[name]).with_suffix("").as_posix()
        truth = seg.read_mask(gt / (key + ".png"))
        scores[name].append({"image": key, "iou": seg.iou_score(seg.read_mask(mask), truth)})
print({name: len(rows) for name, rows in scores.items()})
compare.comparison_figure(OUT / "comparison.png", DATA, masks, scores, photos=False)
