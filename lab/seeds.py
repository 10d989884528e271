"""Seed spread of validation or test records: one row per recipe, its seeds pooled.

    python -m lab.seeds lab/results/gpu-h100/validation/*.json
    python -m lab.seeds lab/results/scale-4372/*/benchmark.json     (test-split records)

Groups lab/validate.py records by their options less the seed and prints, for each recipe,
the number of seeds, the mean and range of the validation IoU, the mean per source, and the
mean and range of every held-out class. The weight averages a record holds (--ema, --swa) are
rows of their own, `average=LABEL`. Seeds decide the water classes by tens of points, so
one recipe's run against another's says little: compare means over seeds, and their ranges.

lab/benchmark.py records (a training graded on the test split) get a table of their own: a
row per seed with its mean IoU, marks and the mean per source (image-weighted), then a row per
recipe with the mean, the worst seed and the spread (best - worst).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from run_tests import marks_for
from segmentation import SCHEDULE, Config, default_steps

# Options that left the code (issue 45's redesign; the loss choice, issue 46), at the values that
# switched them off: a record made before names them so, and means today's recipe by them.
RETIRED = {"frozen_layers": 0, "early_crop_size": 0, "early_fraction": 0.5, "loss": "bce_dice"}


def spread(values: List[float], digits: int = 3) -> str:
    """'mean (min-max)', or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def expand(records: List[dict]) -> List[dict]:
    """The records, plus one per weight average a record holds (validate.py --ema/--swa):
    the same options with `average=LABEL`, scored on the same validation block."""
    out = []
    for record in records:
        out.append(record)
        for label, scores in record.get("averages", {}).items():
            out.append({**scores, "options": {**record["options"], "average": label}})
    return out


def group(records: List[dict]) -> Dict[str, List[dict]]:
    """Records by recipe: their options without the seed, as `key=value` text, with the steps
    the run took where the record holds them (in place of epochs or a default length),
    plus `train_pairs=N` for a run on fewer pairs than the largest (validate.py --train-pairs;
    records from before it stored the count trained on the whole block)."""
    largest = max((r.get("train_pairs", 0) for r in records), default=0)
    recipes: Dict[str, List[dict]] = {}
    for record in records:
        options = {k: v for k, v in record["options"].items() if k != "seed"}
        if "steps" in record:  # the length as run, however it was asked for (epochs, the rule)
            options.pop("epochs", None)
            options["steps"] = record["steps"]
        if record.get("train_pairs", largest) < largest:
            options["train_pairs"] = record["train_pairs"]
        key = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"
        recipes.setdefault(key, []).append(record)
    return recipes


# Classes shown beside the sources: the salient objects and the birds among them.
CLASSES_SHOWN = ("duts.objects", "duts.bird")


def table(records: List[dict]) -> str:
    """A markdown table with a row per recipe."""
    held_out = sorted({c for r in records for c in r.get("held_out", {})})
    sources = sorted({s for r in records for s in r["by_source"]})
    shown = [c for c in CLASSES_SHOWN if all(c in r.get("per_class", {}) for r in records)]
    header = ["recipe", "seeds", "val IoU", *sources, *shown,
              *(f"{c} (held out)" for c in held_out)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for recipe, runs in group(records).items():
        cells = [recipe, str(len(runs)), spread([r["val_iou"] for r in runs], 4)]
        cells += [f"{np.mean([r['by_source'][s] for r in runs]):.3f}" for s in sources]
        cells += [spread([r["per_class"][c] for r in runs]) for c in shown]
        cells += [spread([r["held_out"][c] for r in runs]) for c in held_out]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# A class's source is the part of its name before the first dot; these are the words for it.
SOURCES = {"pets": "pets", "weizmann": "horses", "davis": "DAVIS", "duts": "DUTS"}


def source_of(cls: str) -> str:
    """'pets.Bengal' -> 'pets', 'duts.bird' -> 'DUTS birds', 'duts.objects' -> 'DUTS'."""
    if cls == "duts.bird":
        return "DUTS birds"
    prefix = cls.split(".", 1)[0]
    return SOURCES.get(prefix, prefix)


def by_source(per_class: Dict[str, float], sizes: Dict[str, int]) -> Dict[str, float]:
    """Image-weighted mean IoU per source of a per-class table."""
    totals: Dict[str, List[float]] = {}
    for cls, iou in per_class.items():
        sums = totals.setdefault(source_of(cls), [0.0, 0.0])  # IoU x images, images
        sums[0] += iou * sizes[cls]
        sums[1] += sizes[cls]
    return {source: total / count for source, (total, count) in sorted(totals.items())}


def recipe_key(recipe: dict, steps: Optional[int] = None, pairs: Optional[int] = None) -> str:
    """A benchmark record's recipe as the options that differ from the defaults, less the seed.
    Given the run's `steps` and training `pairs`, an earlier rule that chose the length today's
    rule chooses for that data (a floor or cap that did not bind) counts as today's."""
    # A length from the rule is recorded with the rule (`schedule`), as the defaults make it.
    defaults = {**RETIRED, **asdict(Config()), "schedule": SCHEDULE}
    batch_size = recipe.get("batch_size", Config.batch_size)
    if recipe.get("schedule") and pairs and steps == default_steps(pairs, batch_size)[0]:
        recipe = {**recipe, "schedule": SCHEDULE}
    changed = {k: v for k, v in recipe.items()
               if k not in ("seed", "predict_size") and defaults.get(k, None) != v}
    return ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "defaults"


def benchmark_table(records: List[dict]) -> str:
    """Markdown tables of benchmark.py records: a row per seed, then a row per recipe pooled."""
    rows = sorted(((recipe_key(r["recipe"], r["training"]["steps"], r["training"]["images"]),
                    r["recipe"]["seed"], r["quality"]["mean_iou"],
                    by_source(r["quality"]["per_class"], r["quality"]["class_sizes"]))
                   for r in records), key=lambda row: (row[0], row[1]))
    sources = sorted({s for *_, found in rows for s in found})
    header = ["recipe", "seed", "test mean IoU", "marks", *sources]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for recipe, seed, mean, found in rows:
        cells = [recipe, str(seed), f"{mean:.4f}", str(marks_for(mean))]
        lines.append("| " + " | ".join(cells + [f"{found[s]:.3f}" if s in found else ""
                                                 for s in sources]) + " |")
    header = ["recipe", "seeds", "test mean IoU", "worst seed", "spread", *sources]
    lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for recipe in sorted({row[0] for row in rows}):
        runs = [row for row in rows if row[0] == recipe]
        means = [row[2] for row in runs]
        cells = [recipe, str(len(runs)), f"{np.mean(means):.4f}", f"{min(means):.4f}",
                 f"{max(means) - min(means):.4f}"]
        cells += [spread([row[3][s] for row in runs if s in row[3]]) for s in sources]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", type=Path,
                        help="validate.py records (NAME.json) or benchmark.py records "
                             "(benchmark.json)")
    args = parser.parse_args()
    records = []
    for path in args.records:
        if path.name.endswith(".history.json"):  # per-pass curves beside a record
            continue
        record = json.loads(path.read_text())
        if "quality" in record or "options" in record:
            records.append(record)
        else:  # a predict sweep, say: not a training run
            print(f"skipped {path}: not a validate.py or benchmark.py record", file=sys.stderr)
    tested = [r for r in records if "quality" in r]
    validated = [r for r in records if "quality" not in r]
    if validated:
        print(table(expand(validated)))
    if tested:
        print(benchmark_table(tested))
    return 0


if __name__ == "__main__":
    sys.exit(main())
