"""Benchmark the default recipe: train, grade as the course does, record quality, speed and size.

    python -m lab.benchmark --train ../shared/data/public_data/train \
        --test ../shared/data/public_data
    python -m lab.benchmark --checkpoint segmentation_model.pth --test ../shared/data/public_data

The first trains with train_model's defaults (on GPU when present) and grades the result; the
second grades an existing checkpoint. Both write `<out>/benchmark.json` and `<out>/benchmark.md`.
Speeds are recorded beside a fixed yardstick that no recipe change moves: one training step of
torchvision's plain MobileNetV2 classifier on 16 random 224x224 images. Training speed divided
by it compares recipes across days and machines, and `predict` is timed against a bare
classifier forward pass in the same run.

    --recipe K=V,K=V         train this recipe (train_model options over the defaults) instead
    --recipes K=V,K=V ...    also train each recipe (train_model options) --speed-steps steps on
                             the --train data, alternating with the defaults, for images/s
    --scale N                also build an N-pair training folder (the --train pairs repeated,
                             flipped and cropped) and time loading it, its peak memory and a step
"""

from __future__ import annotations

import argparse
import ast
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
import torchvision
from PIL import Image

import segmentation
from run_tests import evaluate, find_test_folders, marks_for
from tools.checkpoint import load_model


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


def _median_ms(function, steps: int, warmup: int) -> float:
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[warmup:]))


def machine() -> dict:
    """The machine in a record: torch, the CPU and its vector units (which decide the order in
    which sums are added up, and much of the speed)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return {"torch": torch.__version__, "cpu_capability": capability, "cpu": cpu}


def reference_step_ms(steps: int = 6, warmup: int = 2) -> float:
    """Median milliseconds of one training step of torchvision's plain mobilenet_v2()
    classifier (16 random 224x224 images, cross-entropy, AdamW) on the CPU: the machine's
    speed, measured by a fixed workload that does not change with the recipe."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(16, 3, 224, 224)
    labels = torch.randint(0, 1000, (16,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return _median_ms(step, steps, warmup)


def bare_forward_ms(steps: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of a bare mobilenet_v2() classification forward of one 224x224 image
    (eval, no gradients, default memory layout): the unit `predict` is measured in."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        return _median_ms(lambda: model(image), steps, warmup)


def recipe_images_per_second(data, options: dict, steps: int) -> float:
    """Training images per second of a train_model recipe (`options` over the defaults), data
    augmentation included, over `steps` steps of fit on `data` (after one warm-up step)."""
    def config(length: int):
        return segmentation.Config(**{**options, "steps": length})
    torch.manual_seed(0)
    model = segmentation.get_model()
    segmentation.fit(model, data, config=config(1), verbose=False)  # warm-up
    start = time.perf_counter()
    segmentation.fit(model, data, config=config(steps), verbose=False)
    return steps * config(steps).batch_size / (time.perf_counter() - start)


def build_scaled_folder(train_dir, out_dir: Path, count: int) -> Path:
    """`count` image/mask pairs in out_dir/{images,gt}/<class>/: the training pairs repeated,
    each repeat mirrored or cropped differently (for timing and memory only, never committed)."""
    pairs = segmentation.find_pairs(train_dir)
    rng = np.random.default_rng(0)
    for index in range(count):
        image_path, mask_path, cls = pairs[index % len(pairs)]
        image, mask = segmentation.read_image(image_path), segmentation.read_mask(mask_path)
        height, width = mask.shape
        h, w = int(height * rng.uniform(0.8, 1)), int(width * rng.uniform(0.8, 1))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        image, mask = image[y:y + h, x:x + w], mask[y:y + h, x:x + w]
        if (index // len(pairs)) % 2:
            image, mask = image[:, ::-1], mask[:, ::-1]
        name = f"{index:05d}"
        for folder, array, suffix in (("images", image, ".jpg"),
                                      ("gt", mask.astype(np.uint8) * 255, ".png")):
            (out_dir / folder / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(array)).save(
                out_dir / folder / cls / f"{name}{suffix}")
    return out_dir


# Loads the folder as train_model does, then times steps of the default recipe on it.
SCALE_RUN = """
import json, re, sys, time
sys.path.insert(0, {root!r})
import torch, segmentation
def peak_mb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
start = time.time()
data = segmentation.SegmentationData({folder!r}, progress=segmentation.LoadProgress(print, 10))
load_seconds = time.time() - start
loaded_mb = peak_mb()
model = segmentation.get_model()
segmentation.fit(model, data, config=segmentation.Config(steps=2), verbose=False)
start = time.time()
segmentation.fit(model, data, config=segmentation.Config(steps={steps}), verbose=False)
step_seconds = (time.time() - start) / {steps}
print(json.dumps({{"images": len(data), "load_seconds": load_seconds,
                  "peak_mb_after_loading": loaded_mb, "peak_mb": peak_mb(),
                  "step_seconds": step_seconds}}))
"""


def scale_test(train_dir, count: int, steps: int = 20) -> dict:
    """Build a `count`-pair folder, then load it and train `steps` steps in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        folder = build_scaled_folder(train_dir, Path(tmp) / "train", count)
        build_seconds = time.time() - start
        code = SCALE_RUN.format(root=str(Path(__file__).resolve().parent.parent),
                                folder=str(folder), steps=steps)
        result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True)
    print(result.stdout.strip())
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["build_seconds"] = build_seconds
    steps = segmentation.default_steps(count)[0]  # the default length for this many pairs
    record["default_run_minutes"] = record["step_seconds"] * steps / 60
    record["progress_lines"] = sum(line.startswith("loading ")
                                   for line in result.stdout.splitlines())
    return record


# VmHWM, not ru_maxrss: a child started from a big process inherits the parent's ru_maxrss.
LARGE_IMAGE_PEAK = """
import re, sys
sys.path.insert(0, {root!r})
import segmentation
from tools.checkpoint import load_model
def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
model = load_model({checkpoint!r})
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
    m = record["machine"]
    lines = ["| | |", "|---|---|",
             f"| mean IoU (flip TTA, as shipped) | **{q['mean_iou']:.4f}** "
             f"(marks {marks_for(q['mean_iou'])}/10) |",
             f"| mean IoU without TTA | {q['mean_iou_no_tta']:.4f} |",
             f"| images below IoU 0.5 | {q['share_below_0_5']:.1%} |"]
    reference = m.get("reference_step_ms", {})
    if reference:
        timing = ", ".join(f"{v:.0f} ms {k}" for k, v in reference.items())
        lines += [f"| yardstick | one training step of torchvision's mobilenet_v2() classifier "
                  f"(16 random 224x224 images): {timing} |"]
    elif m.get("training_step_ms"):  # records made before the fixed yardstick
        timing = ", ".join(f"{v:.0f} ms {k}" for k, v in m["training_step_ms"].items())
        lines += [f"| machine speed | one training step of the recipe's own model: {timing} |"]
    if "training" in record:
        t = record["training"]
        length = f"{t['steps']} steps" if "steps" in t else f"{t['epochs']} epochs"
        per = (f" ({t['images_per_yardstick_step']:.1f} images per yardstick step)"
               if "images_per_yardstick_step" in t else "")
        lines += [f"| training | {t['seconds'] / 60:.1f} min, {t['images_per_second']:.1f} images/s"
                  f"{per}, {length} on {t['images']} images ({t['device']}) |"]
    for name, r in record.get("recipes", {}).items():
        lines += [f"| training speed, {name} | {r['images_per_second']:.1f} images/s, "
                  f"{r['images_per_yardstick_step']:.1f} images per yardstick step |"]
    s = record["speed"]
    if "bare_forward_ms" in s:
        lines += [f"| predict vs a bare forward | {s['predict_over_bare_forward']:.2f}x a bare "
                  f"mobilenet_v2() forward of one 224x224 image ({s['bare_forward_ms']:.1f} ms) |"]
    lines += [f"| predict | {s['predict_ms_640x360']:.0f} ms per 640x360 image, "
              f"{s['predict_ms_own_size']:.0f} ms at the test images' own sizes; "
              f"{s['predict_ms_640x360_denormal_weights']:.0f} ms with 10% denormal weights |",
              f"| predict on a 6000x4000 photo | {s['predict_6000x4000_extra_peak_mb']:.0f} MB "
              "extra peak memory |",
              f"| peak memory (process) | {record['peak_memory_mb']:.0f} MB |"]
    if "scale" in record:
        c = record["scale"]
        lines += [f"| {c['images']} training images | loaded in {c['load_seconds'] / 60:.1f} min "
                  f"({c['progress_lines']} progress lines), peak memory "
                  f"{c['peak_mb_after_loading']:.0f} MB loaded, {c['peak_mb']:.0f} MB training; "
                  f"{c['step_seconds']:.2f} s a step, so the "
                  f"default {segmentation.default_steps(c['images'])[0]} steps take "
                  f"{c['default_run_minutes']:.0f} min |"]
    lines += [f"| checkpoint | {record['checkpoint_mb']:.1f} MB |",
              f"| machine | {m['cores']} cores, torch {m['torch']}, {m['processor']} |", "",
              "| class | images | IoU | IoU without TTA |", "|---|---|---|---|"]
    for name, iou in q["per_class"].items():
        lines.append(f"| {name} | {q['class_sizes'][name]} | {iou:.4f} | "
                     f"{q['per_class_no_tta'][name]:.4f} |")
    return "\n".join(lines) + "\n"


def parse_setting(item: str) -> tuple[str, object]:
    """'min_crop_area=0.5' -> ('min_crop_area', 0.5); a value that is not a Python literal
    stays text, so 'precision=bf16' needs no quotes."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return key, value


def parse_recipe(text: str) -> dict:
    """'frozen_layers=0,min_crop_area=0.5' -> {'frozen_layers': 0, 'min_crop_area': 0.5}."""
    return dict(parse_setting(item) for item in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", help="training folder; omit to grade --checkpoint as it is")
    parser.add_argument("--test", required=True, help="data folder with test/{images,gt}")
    parser.add_argument("--checkpoint", default="lab/results/model.pth",
                        help="where training saves the model (replaced), or the model to grade")
    parser.add_argument("--out", default="lab/results", help="folder for benchmark.json/.md")
    parser.add_argument("--seed", type=int, default=segmentation.Config.seed)
    parser.add_argument("--no-train", action="store_true",
                        help="with --train: use it only for --recipes and --scale")
    parser.add_argument("--recipe", type=parse_recipe, default={}, metavar="K=V,K=V",
                        help="with --train: train these options over the defaults")
    parser.add_argument("--recipes", nargs="*", default=[], metavar="K=V,K=V",
                        help="time these recipes' training speed beside the defaults")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted training of --checkpoint (its .state); "
                             "the recorded seconds are then the resumed part's only")
    parser.add_argument("--speed-steps", type=int, default=30)
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="time loading and training on an N-pair folder built from --train")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "checkpoint": args.checkpoint}
    train = args.train and not args.no_train
    reference = {"before training" if train else "before grading": reference_step_ms()}
    if train:
        start = time.time()
        options = {**args.recipe, "seed": args.seed}
        segmentation.train_model(args.train, out_path=args.checkpoint, overwrite=True,
                                 history_path=out / "history.json", resume=args.resume, **options)
        seconds = time.time() - start
        # The training record beside the checkpoint says what the run did: its length (from the
        # schedule rule or not, with the rule in its recipe) and how many pairs it read.
        trained = json.loads(segmentation.record_path(args.checkpoint).read_text())
        recipe = {**options, **trained["recipe"]}
        steps = trained["steps"]
        ips = steps * recipe["batch_size"] / seconds
        reference["after training"] = reference_step_ms()
        yardstick = np.mean(list(reference.values()))
        record["training"] = {"seconds": seconds, "steps": steps, "seed": args.seed,
                              "images": trained["trained_on"]["pairs"], "resumed": args.resume,
                              "images_per_second": ips,
                              "images_per_yardstick_step": ips * yardstick / 1000,
                              "device": "cuda" if torch.cuda.is_available() else "cpu"}
        record["recipe"] = {**recipe, "predict_size": segmentation.IMAGE_SIZE}
    if args.recipes:
        data = segmentation.SegmentationData(args.train)
        recipes = {"defaults": {}, **{text: parse_recipe(text) for text in args.recipes}}
        speeds: dict = {name: [] for name in recipes}
        for _ in range(2):  # alternate, so that a drift in the machine's speed hits all alike
            for name, options in recipes.items():
                speeds[name].append(recipe_images_per_second(data, options, args.speed_steps))
                print(f"{name}: {speeds[name][-1]:.1f} images/s", flush=True)
        yardstick = reference_step_ms()
        reference["beside the recipes"] = yardstick
        record["recipes"] = {
            name: {"images_per_second": float(np.mean(v)), "runs": v,
                   "images_per_yardstick_step": float(np.mean(v)) * yardstick / 1000}
            for name, v in speeds.items()}
        del data
    if args.scale:
        record["scale"] = scale_test(args.train, args.scale)
    model = load_model(args.checkpoint)
    with_tta = evaluate(lambda p: segmentation.predict(model, p), args.test)
    without = evaluate(lambda p: segmentation.predict(model, p, flip_tta=False), args.test)
    ious = np.array([r["iou"] for r in with_tta["records"]])
    record["quality"] = {"mean_iou": with_tta["mean_iou"], "mean_iou_no_tta": without["mean_iou"],
                         "per_class": with_tta["per_class"],
                         "per_class_no_tta": without["per_class"],
                         "class_sizes": with_tta["class_sizes"],
                         "share_below_0_5": float((ious < 0.5).mean())}
    images_dir, _ = find_test_folders(args.test)
    images = sorted(images_dir.glob("*/*.jpg"))
    sample = images[::max(1, len(images) // 20)]
    wide = [p for p in sample if Image.open(p).size == (640, 360)] or sample[:1]
    bare = bare_forward_ms()
    predict_ms = time_predict(model, wide[:5])
    record["speed"] = {"predict_ms_own_size": time_predict(model, sample, 1),
                       "predict_ms_640x360": predict_ms, "bare_forward_ms": bare,
                       "predict_over_bare_forward": predict_ms / bare,
                       "predict_ms_640x360_denormal_weights": time_predict(with_denormals(model),
                                                                           wide[:5]),
                       "predict_6000x4000_extra_peak_mb": large_image_peak_mb(args.checkpoint,
                                                                              str(wide[0]))}
    record["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record["checkpoint_mb"] = os.path.getsize(args.checkpoint) / 2**20
    record["machine"] = {"cores": os.cpu_count(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__,
                         "processor": platform.processor() or platform.machine(),
                         "threads": torch.get_num_threads(), "reference_step_ms": reference}
    (out / "benchmark.json").write_text(json.dumps(record, indent=2))
    (out / "benchmark.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
