import sys, json, time
from pathlib import Path
import torch
sys.path.insert(0, '.')
import segmentation as seg
from bench.birds import grade
data = Path('../shared/data/public_data')
test = [p for p in seg.find_pairs(data / 'test') if p[2] == 'cub.bird']
out = {}
for name in ['D0-default-600pairs-seed0', 'D1-default-600pairs-seed1', 'D2-default-600pairs-seed2']:
    model = seg.get_model()
    model.load_state_dict(torch.load(f'bench/results/birds/models/{name}.pth', map_location='cpu'))
    for size in (288, 320, 352, 256):
        t = time.time()
        g = grade(model, test, size)
        out.setdefault(name, {})[size] = {k: v for k, v in g.items() if k != 'per_image'}
        print(name, size, round(g['iou'], 4), round(g['smaller_half_iou'], 4), round(g['larger_half_iou'], 4), round(time.time() - t), flush=True)
json.dump(out, open('bench/results/birds/predict-size.json', 'w'), indent=1)
