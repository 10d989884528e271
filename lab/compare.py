"""Assignment parts 1-3: encoder-decoder vs U-Net from scratch vs the pretrained MobileNetV2 U-Net.

    python -m lab.compare                      # weizmann.horse, 7 minutes per model
    python -m lab.compare --data public_data --class <class> --budget 300
    python -m lab.compare --quick              # a smoke run of a few seconds

The two scratch models (get_scratch_model with skips off and on: the same layers
and feature maps but for the skips) train on one class (or `--pairs N` of it: a small sample)
with the same seed, schedule and wall-clock budget; `--pretrained` trains the submitted model
(ImageNet encoder) on the same sample for the same budget too; a trained checkpoint
(`--checkpoint`, named `--label`) is graded as it is. Everything is graded as the course does,
on that class's test images.

Writes to --out: results.json, results.md, comparison.png, curves.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
import time
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import segmentation as seg  # noqa: E402
from lab.benchmark import machine, reference_step_ms  # noqa: E402
from run_tests import evaluate, find_test_folders  # noqa: E402
from tools.checkpoint import load_model  # noqa: E402
from tools.report import add_key, paint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

MODELS = ("encoder-decoder", "U-Net", "pretrained U-Net")


class ConvEncoder(nn.Module):
    """A small VGG-style encoder trained from scratch (assignment parts 1 and 2).

    Returns features at strides 1, 2, 4, 8, 16.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128, 256), batch_norm: bool = False):
        super().__init__()
        self.out_channels = tuple(channels)
        stages, in_channels = [], 3
        for out_channels in channels:
            stages.append(nn.Sequential(seg.conv_block(in_channels, out_channels, batch_norm),
                                        seg.conv_block(out_channels, out_channels, batch_norm)))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


def get_scratch_model(skips: bool) -> seg.UNet:
    """Assignment parts 1-2: the from-scratch encoder-decoder (skips=False) or U-Net (True),
    segmentation.py's UNet and DecoderBlock around the small ConvEncoder."""
    return seg.UNet(ConvEncoder(batch_norm=False), (128, 64, 32, 16), skips=skips,
                    batch_norm=False)


def train_scratch(skips: bool, train, val, budget: float, seed: int, verbose: bool):
    """One from-scratch model trained for `budget` seconds; returns (model, history)."""
    torch.manual_seed(seed)
    model = get_scratch_model(skips)
    history = seg.fit(model, train, val, seg.Config(minutes=budget / 60, batch_size=16, lr=1e-3,
                                                    seed=seed), device="cpu", verbose=verbose)
    return model, history


def grade(model, data: Path, classes, image_size: int, out_dir=None) -> dict:
    """The grader's scores for `model` (no flip TTA: the scratch models are compared plainly)."""
    result = evaluate(lambda p: seg.predict(model, p, flip_tta=False, image_size=image_size),
                      data, out_dir=out_dir, classes=classes)
    records = result["records"]
    return {"iou": result["mean_iou"], "dice": float(np.mean([r["dice"] for r in records])),
            "accuracy": float(np.mean([r["accuracy"] for r in records])),
            "ms_per_image": 1000 * result["seconds_per_image"], "records": records}


def baselines(data: Path, classes) -> dict:
    """Scores of the two trivial answers: all background and all object."""
    rows = {}
    for name, value in (("all background", 0.0), ("all object", 1.0)):
        def constant(path, value=value):
            height, width = seg.read_image(path).shape[:2]
            return np.full((height, width), value, np.float32)
        result = evaluate(constant, data, classes=classes)
        rows[name] = {"iou": result["mean_iou"],
                      "dice": float(np.mean([r["dice"] for r in result["records"]])),
                      "accuracy": float(np.mean([r["accuracy"] for r in result["records"]]))}
    return rows


def comparison_figure(path: Path, data: Path, masks_dirs: dict, scores: dict, n_rows: int = 6,
                      photos: bool = True):
    """Rows of test images (best, typical, worst by the U-Net's IoU) x models, as overlays.

    Without `photos` the masks are painted on flat grey and the photo column is left out: no
    pixel of a photo is in the picture (for data whose terms forbid copying the photos).
    """
    images_dir, gt_dir = find_test_folders(data)
    order = sorted(scores["U-Net"], key=lambda r: -r["iou"])
    picks = [order[0], order[1], order[len(order) // 2], order[len(order) // 2 + 1],
             order[-2], order[-1]] if len(order) >= n_rows else order
    columns = ["image"] * photos + ["ground truth", *masks_dirs]
    fig, axes = plt.subplots(len(picks), len(columns),
                             figsize=(2.6 * len(columns), 2.2 * len(picks)), squeeze=False)
    for row, record in enumerate(picks):
        key = record["image"]
        truth = seg.read_mask(gt_dir / (key + ".png"))
        image = (seg.read_image(next(images_dir.glob(key + ".*"))) if photos
                 else np.full((*truth.shape, 3), 128, np.uint8))
        tiles = [(image, "")] * photos + [(paint(image, truth), "")]
        for name, folder in masks_dirs.items():
            iou = next(r["iou"] for r in scores[name] if r["image"] == key)
            tiles.append((paint(image, seg.read_mask(folder / (key + ".png")), truth),
                          f"IoU {iou:.2f}"))
        for col, (shown, label) in enumerate(tiles):
            ax = axes[row, col]
            ax.imshow(shown)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(textwrap.fill(columns[col], 24), fontsize=10)
            if label:
                ax.text(0.02, 0.98, label, transform=ax.transAxes, va="top", fontsize=9,
                        color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1.5))
        axes[row, 0].set_ylabel(key.split("/")[-1], fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    add_key(fig)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    # A 256-colour palette keeps the photo grid small enough to commit beside the README.
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def curves_figure(path: Path, histories: dict):
    """Training loss and validation IoU against wall-clock time, one line per model."""
    fig, (loss_ax, iou_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, history in histories.items():
        minutes = [h["time"] / 60 for h in history]
        loss_ax.plot(minutes, [h["loss"] for h in history], label=name)
        if history and "val_iou" in history[0]:
            iou_ax.plot(minutes, [h["val_iou"] for h in history], label=name)
    loss_ax.set(xlabel="minutes", ylabel="training loss (BCE + Dice)", title="loss")
    iou_ax.set(xlabel="minutes", ylabel="IoU", title="validation IoU (held-out block of train)")
    loss_ax.legend(), iou_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(rows: dict) -> str:
    lines = ["| model | IoU | Dice | pixel acc. | parameters | training | CPU ms/image |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        params = f"{r['parameters'] / 1e6:.2f} M" if "parameters" in r else "-"
        train = (f"{r['train_minutes']:.1f} min, {r['steps']:,} steps" if "train_minutes" in r
                 else "-")
        speed = f"{r['ms_per_image']:.0f}" if "ms_per_image" in r else "-"
        lines.append(f"| {name} | {r['iou']:.4f} | {r['dice']:.4f} | {r['accuracy']:.4f} | "
                     f"{params} | {train} | {speed} |")
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "public_data"))
    parser.add_argument("--class", dest="cls", default="weizmann.horse")
    parser.add_argument("--pairs", type=int, default=None, metavar="N",
                        help="a small sample: N of the class's training pairs, evenly spaced "
                             "(default: all); 15%% of them are held out for the curves")
    parser.add_argument("--budget", type=float, default=420, help="seconds of training per model")
    parser.add_argument("--image-size", type=int, default=128, help="scratch models' input size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", action="store_true",
                        help="also train the pretrained MobileNetV2 U-Net on the same sample for "
                             "the same budget (needs the ImageNet weights)")
    parser.add_argument("--checkpoint", default=str(ROOT / "segmentation_model.pth"),
                        help="a trained pretrained U-Net, graded as it is (skipped if absent)")
    parser.add_argument("--label", default="pretrained U-Net",
                        help="its name in the table and the figures")
    parser.add_argument("--history",
                        default=str(ROOT / "lab" / "results" / "seed0" / "history.json"),
                        help="its training history, for the curves (skipped if absent)")
    parser.add_argument("--out", default=str(ROOT / "lab" / "results" / "compare"))
    parser.add_argument("--no-photos", dest="photos", action="store_false",
                        help="draw the masks on grey without the photos (for data whose terms "
                             "forbid copying them, such as the CUB birds)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    return parser


def read_sample(data: Path, cls: str, pairs: Optional[int], image_size: int):
    """The class's training pairs (or `pairs` of them, evenly spaced) at `image_size`: (train,
    val), the last 15% held out as the validation block of the curves."""
    found = [p for p in seg.find_pairs(data / "train") if p[2] == cls]
    if not found:
        raise seg.DataError(f"no training images of class {cls!r} in {data / 'train'}")
    if pairs:
        found = [found[(i * len(found)) // pairs] for i in range(min(pairs, len(found)))]
    decoded = seg.SegmentationData(None, image_size, found)
    train_indices, val_indices = seg.split_indices(found, 0.15)
    return decoded.subset(train_indices), decoded.subset(val_indices) if val_indices else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.budget, args.image_size = 3, 32
    data, out = Path(args.data), Path(args.out)
    if (out / "results.json").exists():
        get_args_parser().error(f"{out / 'results.json'} exists: a run's record is never "
                                "overwritten; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    classes = [args.cls]
    try:
        train, val = read_sample(data, args.cls, args.pairs, args.image_size)
    except seg.DataError as error:
        get_args_parser().error(str(error))
    # The machine's speed, timed first: the budget is wall-clock time (not in --quick).
    yardstick = None if args.quick else reference_step_ms()
    if yardstick is not None:
        print(f"yardstick step: {yardstick:.0f} ms", flush=True)
    print(f"{args.cls}: {len(train)} training, {len(val) if val else 0} validation images; "
          f"{args.budget:.0f}s per model at {args.image_size}px, {torch.get_num_threads()} threads")
    rows, histories, scores, masks_dirs = {}, {}, {}, {}

    def add(name: str, model, image_size: int, **facts) -> None:
        """Grade `model` on the class's test photos and keep its row, scores and masks."""
        masks_dirs[name] = out / "masks" / name
        result = grade(model, data, classes, image_size, masks_dirs[name])
        scores[name] = result.pop("records")
        rows[name] = {**result, "parameters": sum(p.numel() for p in model.parameters()), **facts}
        print(f"   {name}: IoU {result['iou']:.4f}")

    for name, skips in (("encoder-decoder", False), ("U-Net", True)):
        print(f"-- {name}")
        start = time.time()
        model, histories[name] = train_scratch(skips, train, val, args.budget, args.seed,
                                               verbose=not args.quick)
        add(name, model, args.image_size, train_minutes=(time.time() - start) / 60,
            epochs=len(histories[name]), steps=histories[name][-1]["steps"])
    if args.pretrained:
        name = "pretrained U-Net, same sample and budget"
        print(f"-- {name}")
        start = time.time()
        model, histories[name] = train_pretrained(data, args, verbose=not args.quick)
        add(name, model, seg.IMAGE_SIZE, train_minutes=(time.time() - start) / 60,
            epochs=len(histories[name]), steps=histories[name][-1]["steps"])
    if Path(args.checkpoint).exists():
        model = load_model(args.checkpoint)
        add(args.label, model, seg.IMAGE_SIZE)
        if Path(args.history).exists():
            histories[args.label] = json.loads(Path(args.history).read_text())
    rows.update(baselines(data, classes))
    pairs = len(train) + (len(val) if val else 0)
    sample = f"{pairs} training pairs" if args.pairs else "all pairs"
    record = {"class": args.cls, "sample": sample, "seed": args.seed, "budget_s": args.budget,
              "image_size": args.image_size, "command": "python -m lab.compare " + shlex.join(argv),
              "machine": machine(), "threads": torch.get_num_threads(),
              "yardstick_step_ms": yardstick, "rows": rows, "histories": histories}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    table = markdown(rows)
    (out / "results.md").write_text(f"Class `{args.cls}` ({sample}), {args.budget:.0f}s per "
                                    f"model trained here.\n\n" + table)
    comparison_figure(out / "comparison.png", data, masks_dirs, scores, photos=args.photos)
    curves_figure(out / "curves.png", histories)
    print(table)
    print(f"written to {out}")
    return 0


def train_pretrained(data: Path, args, verbose: bool):
    """The submitted model (ImageNet encoder) trained on the same sample for the same budget,
    at its own image size; returns (model, history)."""
    train, val = read_sample(data, args.cls, args.pairs, seg.IMAGE_SIZE)
    torch.manual_seed(args.seed)
    model = seg.get_model()
    seg.load_encoder_weights(model.encoder)
    history = seg.fit(model, train, val, seg.Config(minutes=args.budget / 60, seed=args.seed),
                      device="cpu", verbose=verbose)
    return model, history


if __name__ == "__main__":
    sys.exit(main())
