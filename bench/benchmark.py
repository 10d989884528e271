"""Benchmark the default recipe: train, grade as the course does, record quality, speed and size.

    python bench/benchmark.py --train ../shared/data/public_data/train --test ../shared/data/public_data
    python bench/benchmark.py --checkpoint segmentation_model.pth --test ../shared/data/public_data

The first trains with train_model's defaults (on GPU when present) and grades the result; the
second grades an existing checkpoint. Both write `<out>/benchmark.json` and `<out>/benchmark.md`,
with the time of one training step on random data as a yardstick of the machine's speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import segmentation  # noqa: E402
from run_tests import evaluate, find_test_folders, marks_for  # noqa: E402


def time_predict(model, images, repeats: int = 3) -> float:
    """Median milliseconds per predict() call (TTA included) over `images`."""
    segmentation.predict(model, images[0])  # warm-up
    times = []
    for path in images:
        for _ in range(repeats):
            start = time.perf_counter()
            segmentation.predict(model, path)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def training_step_ms(steps: int = 6, warmup: int = 2) -> float:
    """Median milliseconds of one training step as fit() takes it (forward, backward, AdamW) on
    random data: a yardstick of the machine's speed, which varies from day to day and hour to
    hour, so that training times in records taken on different days can be compared."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = segmentation.get_model().to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size, batch = segmentation.CROP_SIZE, segmentation.TRAIN_DEFAULTS["batch_size"]
    images = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    masks = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    use_amp = segmentation.bf16_autocast(device)
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        segmentation.train_step(model, optimizer, images, masks, use_amp)  # .item() waits for it
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[warmup:]))


# VmHWM, not ru_maxrss: a child started from a big process inherits the parent's ru_maxrss.
LARGE_IMAGE_PEAK = """
import re, sys
sys.path.insert(0, {root!r})
import segmentation
def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
model = segmentation.load_model({checkpoint!r})
segmentation.predict(model, {small!r})
before = peak_kb()
out = segmentation.predict(model, {large!r})
assert out.shape == (4000, 6000)
print((peak_kb() - before) / 1024)
"""


def large_image_peak_mb(checkpoint: str, small_image: str) -> float:
    """Extra peak memory (MB) of predict() on a 6000x4000 photo, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        large = str(Path(tmp) / "large.jpg")
        noise = np.random.default_rng(0).integers(0, 255, (4000, 6000, 3), dtype=np.uint8)
        Image.fromarray(noise).save(large, quality=90)
        code = LARGE_IMAGE_PEAK.format(root=str(Path(__file__).resolve().parent.parent),
                                       checkpoint=checkpoint, small=small_image, large=large)
        result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True)
    return float(result.stdout.split()[-1])


def with_denormals(model):
    """A copy of `model` with a tenth of every weight tensor set to denormal values."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            chosen = torch.rand(param.shape, generator=generator) < 0.1
            param[chosen] = 1e-40
    return model


def markdown(record: dict) -> str:
    q = record["quality"]
    lines = [f"| | |", "|---|---|",
             f"| mean IoU (flip TTA, as shipped) | **{q['mean_iou']:.4f}** (marks {marks_for(q['mean_iou'])}/10) |",
             f"| mean IoU without TTA | {q['mean_iou_no_tta']:.4f} |",
             f"| images below IoU 0.5 | {q['share_below_0_5']:.1%} |"]
    if "training" in record:
        t = record["training"]
        lines += [f"| training | {t['seconds'] / 60:.1f} min, {t['images_per_second']:.1f} images/s, "
                  f"{t['epochs']} epochs on {t['images']} images ({t['device']}) |"]
    s = record["speed"]
    m = record["machine"]
    step = m.get("training_step_ms", {})
    if step:
        timing = ", ".join(f"{v:.0f} ms {k}" for k, v in step.items())
        shape = (f"{segmentation.TRAIN_DEFAULTS['batch_size']} random "
                 f"{segmentation.CROP_SIZE}x{segmentation.CROP_SIZE} images")
        lines += [f"| machine speed | one training step ({shape}): {timing} |"]
    lines += [f"| predict | {s['predict_ms_640x360']:.0f} ms per 640x360 image, "
              f"{s['predict_ms_own_size']:.0f} ms at the test images' own sizes; "
              f"{s['predict_ms_640x360_denormal_weights']:.0f} ms with 10% denormal weights |",
              f"| predict on a 6000x4000 photo | {s['predict_6000x4000_extra_peak_mb']:.0f} MB extra peak memory |",
              f"| peak memory (process) | {record['peak_memory_mb']:.0f} MB |",
              f"| checkpoint | {record['checkpoint_mb']:.1f} MB |",
              f"| machine | {m['cores']} cores, torch {m['torch']}, {m['processor']} |", "",
              "| class | images | IoU | IoU without TTA |", "|---|---|---|---|"]
    for name, iou in q["per_class"].items():
        lines.append(f"| {name} | {q['class_sizes'][name]} | {iou:.4f} | {q['per_class_no_tta'][name]:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", help="training folder; omit to grade --checkpoint as it is")
    parser.add_argument("--test", required=True, help="data folder with test/{images,gt}")
    parser.add_argument("--checkpoint", default="bench/results/model.pth",
                        help="where training saves the model (replaced), or the model to grade")
    parser.add_argument("--out", default="bench/results", help="folder for benchmark.json/.md")
    parser.add_argument("--epochs", type=int, default=segmentation.TRAIN_DEFAULTS["epochs"])
    parser.add_argument("--seed", type=int, default=segmentation.TRAIN_DEFAULTS["seed"])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "checkpoint": args.checkpoint}
    step_ms = {"before training" if args.train else "before grading": training_step_ms()}
    if args.train:
        start = time.time()
        segmentation.train_model(args.train, epochs=args.epochs, seed=args.seed,
                                 out_path=args.checkpoint, overwrite=True,
                                 history_path=out / "history.json")
        seconds = time.time() - start
        n = len(segmentation.find_pairs(args.train))
        record["training"] = {"seconds": seconds, "epochs": args.epochs, "images": n, "seed": args.seed,
                              "images_per_second": args.epochs * n / seconds,
                              "device": "cuda" if torch.cuda.is_available() else "cpu"}
        step_ms["after training"] = training_step_ms()
        record["recipe"] = {**segmentation.TRAIN_DEFAULTS, "epochs": args.epochs, "seed": args.seed,
                            "predict_size": segmentation.IMAGE_SIZE}
    model = segmentation.load_model(args.checkpoint)
    with_tta = evaluate(lambda p: segmentation.predict(model, p), args.test)
    without = evaluate(lambda p: segmentation.predict(model, p, flip_tta=False), args.test)
    ious = np.array([r["iou"] for r in with_tta["records"]])
    record["quality"] = {"mean_iou": with_tta["mean_iou"], "mean_iou_no_tta": without["mean_iou"],
                         "per_class": with_tta["per_class"], "per_class_no_tta": without["per_class"],
                         "class_sizes": with_tta["class_sizes"],
                         "share_below_0_5": float((ious < 0.5).mean())}
    images_dir, _ = find_test_folders(args.test)
    images = sorted(images_dir.glob("*/*.jpg"))
    sample = images[::max(1, len(images) // 20)]
    wide = [p for p in sample if Image.open(p).size == (640, 360)] or sample[:1]
    record["speed"] = {"predict_ms_own_size": time_predict(model, sample, 1),
                       "predict_ms_640x360": time_predict(model, wide[:5]),
                       "predict_ms_640x360_denormal_weights": time_predict(with_denormals(model), wide[:5]),
                       "predict_6000x4000_extra_peak_mb": large_image_peak_mb(args.checkpoint,
                                                                              str(wide[0]))}
    record["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record["checkpoint_mb"] = os.path.getsize(args.checkpoint) / 2**20
    record["machine"] = {"cores": os.cpu_count(), "torch": torch.__version__,
                         "torchvision": segmentation.torchvision.__version__,
                         "processor": platform.processor() or platform.machine(),
                         "threads": torch.get_num_threads(), "training_step_ms": step_ms}
    (out / "benchmark.json").write_text(json.dumps(record, indent=2))
    (out / "benchmark.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
