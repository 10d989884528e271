import sys
from pathlib import Path
sys.path.insert(0, 'experiments'); sys.path.insert(0, '.')
import compare, segmentation as seg
from run_tests import find_test_folders
data = Path('../shared/data/public_data'); out = Path('experiments/results/birds-60')
_, gt = find_test_folders(data)
masks, scores = {}, {}
names = ["encoder-decoder", "U-Net", "pretrained U-Net, same sample and budget", "the bird-only default (600 pairs, seed 2)"]
for name in names:
    masks[name] = out / 'masks' / name
    scores[name] = []
    for m in sorted((masks[name]).rglob('*.png')):
        key = m.relative_to(masks[name]).with_suffix('').as_posix()
        scores[name].append({"image": key, "iou": seg.iou_score(seg.read_mask(m), seg.read_mask(gt / (key + '.png')))})
print({k: len(v) for k, v in scores.items()})
compare.comparison_figure(out / 'comparison.png', data, masks, scores, photos=False)
