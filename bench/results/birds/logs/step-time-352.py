import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, '.')
import segmentation as seg
from bench.validate import linked_pairs
from bench.benchmark import reference_step_ms
data = Path('../shared/data/public_data')
train = [p for p in seg.find_pairs(data / 'train') if p[2] == 'cub.bird']
with tempfile.TemporaryDirectory() as d:
    root = linked_pairs(data / 'train', train, Path(d) / 'train')
    print('yardstick', reference_step_ms(), flush=True)
    for size, crop in [(288, 224), (352, 288), (288, 224), (352, 288)]:
        for steps in (10, 40):
            t = time.time()
            seg.train_model(root, out_path=Path(d) / f'm{size}{steps}.pth', steps=steps, image_size=size, crop_size=crop, verbose=False)
            print(size, crop, steps, round(time.time() - t, 1), flush=True)
    print('yardstick', reference_step_ms(), flush=True)
