"""Compare recipe choices on a validation block carved from the training split (never the test
split).

    python -m lab.validate NAME --train ../shared/data/public_data/train [--set key=value ...]

Trains with train_model's defaults overridden by --set (any train_model/fit keyword, e.g.
encoder_lr_scale=0.3 or crop_size=192) on all but the last 15% of each training class, then
scores the held-out 15% the grader's way (full-resolution masks, threshold 0.5, IoU per image),
with predict() at each --predict-sizes size. The model is kept as NAME.pth for later sweeps.
With --hold-out CLASS ..., those classes leave training altogether (a whole video unseen, as a
new scene is) and are scored on all their frames under "held_out". --train-pairs N trains on N
of the pairs before the block instead (evenly spaced within each class, in proportion to its
size), scored on the same block: the schedule at a smaller data size. --ema / --swa also score
averages of the weights kept during the same run (under "averages"): paired with the run's own.
The record holds the steps the run took (`steps`), whatever decided them.
Writes lab/results/validation/NAME.json; the README's results section collects them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import segmentation as seg
from lab.benchmark import parse_setting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--train", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--set", nargs="*", type=parse_setting, default=[], metavar="KEY=VALUE",
                        help="train_model options over the defaults (text needs no quotes)")
    parser.add_argument("--predict-sizes", type=int, nargs="*", default=None,
                        help="score predict() at each of these sizes (default: image_size)")
    parser.add_argument("--hold-out", nargs="*", default=[], metavar="CLASS",
                        help="classes kept out of training and scored on all their images")
    parser.add_argument("--train-pairs", type=int, default=None, metavar="N",
                        help="train on N of the pairs before the block (a smaller data set)")
    parser.add_argument("--ema", type=float, nargs="*", default=[], metavar="DECAY",
                        help="also score an exponential moving average of the weights per decay")
    parser.add_argument("--swa", type=float, nargs="*", default=[], metavar="SHARE",
                        help="also score the plain mean of the weights over the last SHARE of "
                             "steps")
    parser.add_argument("--out", default="lab/results/validation")
    args = parser.parse_args()
    options = dict(args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_pairs = seg.find_pairs(args.train)
    held_out = [p for p in all_pairs if p[2] in args.hold_out]
    missing = set(args.hold_out) - {p[2] for p in held_out}
    if missing:
        parser.error(f"no class {', '.join(sorted(missing))} in {args.train}")
    # The pairs train_model sees, in its order: its validation block is the same split of them.
    kept = [p for p in all_pairs if p[2] not in args.hold_out]
    train_indices, val_indices = seg.split_indices(kept, args.val_fraction)
    val_pairs = [kept[i] for i in val_indices]
    with tempfile.TemporaryDirectory() as folder:
        if args.train_pairs:  # the block as a folder of its own, beside the smaller training set
            subset = evenly_per_class([kept[i] for i in train_indices], args.train_pairs)
            pairs = len(subset)
            train_root = linked_pairs(Path(args.train), subset, Path(folder) / "train")
            where = {"val_data_path": linked_pairs(Path(args.train), val_pairs,
                                                   Path(folder) / "val"), "val_fraction": 0.0}
        else:
            train_root = without_classes(Path(args.train), args.hold_out, Path(folder))
            where = {"val_fraction": args.val_fraction}
            pairs = len(train_indices)
        start = time.time()
        # The length train_model will run (None: the clock's): the averages' windows.
        recipe = {k: v for k, v in options.items() if k in seg.Config.__dataclass_fields__}
        steps = seg.total_steps(seg.Config(**recipe), pairs)[0] or 0
        averages = WeightAverages(args.ema, args.swa, steps)
        real_step, seg.train_step = seg.train_step, averages.wrap(seg.train_step)  # fit() looks
        history_path = out / f"{args.name}.history.json"
        try:                                                                     # it up each step
            model = seg.train_model(train_root, out_path=None, **where,
                                    history_path=history_path, **options)
        finally:
            seg.train_step = real_step
        minutes = (time.time() - start) / 60
    # As run: the rule's length, or the clock's.
    trained = json.loads(history_path.read_text())[-1]["steps"]
    seg.save_atomic(seg.clean_state_dict(model), out / f"{args.name}.pth")  # for later sweeps
    sizes = args.predict_sizes or [options.get("image_size", seg.IMAGE_SIZE)]
    record = {"name": args.name, "options": options, "hold_out": args.hold_out,
              "train_pairs": pairs, "steps": trained, "train_minutes": minutes}
    for size in sizes:
        scores = score(model, val_pairs, size)
        if held_out:
            scores["held_out"] = score(model, held_out, size)["per_class"]
        record[f"predict_{size}"] = scores
        print(size, json.dumps(scores), flush=True)
    for label, averaged in averages.models(model).items():  # scored at the first size only
        record.setdefault("averages", {})[label] = scores = score(averaged, val_pairs, sizes[0])
        if held_out:
            scores["held_out"] = score(averaged, held_out, sizes[0])["per_class"]
        print(label, json.dumps(scores), flush=True)
    record.update(record[f"predict_{sizes[0]}"])
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return 0


class WeightAverages:
    """Averages of a model's weights kept beside fit(), which it leaves untouched: an
    exponential moving average per decay (EMA), and the plain mean over the last share of the
    steps (SWA), batch-norm statistics averaged alike. Wraps train_step; one record per model
    it steps (the plan's timing probe steps copies of the model)."""

    def __init__(self, ema_decays, swa_shares, total_steps: int) -> None:
        self.ema_decays, self.swa_shares, self.total_steps = ema_decays, swa_shares, total_steps
        self.tracked: dict = {}

    def wrap(self, train_step):
        def step(model, *args, **kwargs):
            loss = train_step(model, *args, **kwargs)
            self.update(model)
            return loss
        return step

    def update(self, model) -> None:
        state = {k: v.detach().float() for k, v in model.state_dict().items()
                 if v.is_floating_point()}
        tracked = self.tracked.setdefault(id(model), {"steps": 0, "ema": {}, "swa": {}})
        tracked["steps"] += 1
        for decay in self.ema_decays:
            ema = tracked["ema"].get(decay)
            if ema is None:
                tracked["ema"][decay] = {k: v.clone() for k, v in state.items()}
            else:
                for k, v in state.items():
                    ema[k].mul_(decay).add_(v, alpha=1 - decay)
        for share in self.swa_shares:
            if tracked["steps"] > self.total_steps * (1 - share):
                mean, n = tracked["swa"].setdefault(share, [None, 0])
                n += 1
                if mean is None:
                    mean = {k: v.clone() for k, v in state.items()}
                else:
                    for k, v in state.items():
                        mean[k].add_((v - mean[k]) / n)
                tracked["swa"][share] = [mean, n]

    def models(self, model) -> dict:
        """{"ema_DECAY" / "swa_SHARE": a copy of `model` holding that average}, in eval mode."""
        tracked = self.tracked.get(id(model), {"ema": {}, "swa": {}})
        out = {}
        for label, state in [(f"ema_{d}", s) for d, s in tracked["ema"].items()] + \
                            [(f"swa_{s}", m[0]) for s, m in tracked["swa"].items()]:
            averaged = copy.deepcopy(model)
            full = averaged.state_dict()
            full.update({k: v.to(full[k].dtype) for k, v in state.items()})
            averaged.load_state_dict(full)
            out[label] = averaged.eval()
        return out


def without_classes(root: Path, classes: list, folder: Path) -> Path:
    """`root` as a tree of links in `folder`, less the given classes (no image is copied)."""
    if not classes:
        return root
    for part in ("images", "gt"):
        (folder / part).mkdir()
        for class_dir in sorted((root / part).iterdir()):
            if class_dir.name not in classes:
                (folder / part / class_dir.name).symlink_to(class_dir.resolve())
    return folder


def evenly_per_class(pairs: list, total: int) -> list:
    """About `total` of `pairs`, from each class in proportion to its size, evenly spaced in name
    order (a video's frames from its whole length; the same subset every time)."""
    by_class: dict = {}
    for pair in pairs:
        by_class.setdefault(pair[2], []).append(pair)
    chosen = []
    for members in by_class.values():
        n = min(len(members), max(1, round(len(members) * total / len(pairs))))
        chosen += [members[(i * len(members)) // n] for i in range(n)]
    return chosen


def linked_pairs(root: Path, pairs: list, folder: Path) -> Path:
    """`pairs` of `root` as a tree of links in `folder`, in the same layout (no image is copied)."""
    for image, mask, _ in pairs:
        for path in (image, mask):
            link = folder / path.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return folder


def score(model, val_pairs, size: int) -> dict:
    """The grader's mean per-image IoU on `val_pairs` with predict() at `size`, and by source."""
    per_class: dict = {}
    for image_path, mask_path, cls in val_pairs:
        pred = seg.predict(model, image_path, image_size=size) > 0.5
        per_class.setdefault(cls, []).append(seg.iou_score(pred, seg.read_mask(mask_path)))
    ious = [v for values in per_class.values() for v in values]
    groups = {g: float(np.mean([v for c, vs in per_class.items() if c.startswith(g) for v in vs]))
              for g in sorted({c.split(".")[0] for c in per_class})}
    return {"val_iou": float(np.mean(ious)), "val_images": len(ious), "by_source": groups,
            "per_class": {c: float(np.mean(v)) for c, v in sorted(per_class.items())}}


if __name__ == "__main__":
    sys.exit(main())
