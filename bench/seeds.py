"""Seed spread of validation records: one row per recipe, its seeds pooled.

    python bench/seeds.py bench/results/gpu-h100/validation/*.json

Groups bench/validate.py records by their options less the seed and prints, for each recipe,
the number of seeds, the mean and range of the validation IoU, the mean per source, and the
mean and range of every held-out class. The weight averages a record holds (--ema, --swa) are
rows of their own, `average=LABEL`. Seeds decide the water classes by tens of points, so
one recipe's run against another's says little: compare means over seeds, and their ranges.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np


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
    """Records by recipe: their options without the seed, as `key=value` text."""
    recipes: Dict[str, List[dict]] = {}
    for record in records:
        options = {k: v for k, v in record["options"].items() if k != "seed"}
        key = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"
        recipes.setdefault(key, []).append(record)
    return recipes


def table(records: List[dict]) -> str:
    """A markdown table with a row per recipe."""
    held_out = sorted({c for r in records for c in r.get("held_out", {})})
    sources = sorted({s for r in records for s in r["by_source"]})
    header = ["recipe", "seeds", "val IoU", *sources, *(f"{c} (held out)" for c in held_out)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for recipe, runs in group(records).items():
        cells = [recipe, str(len(runs)), spread([r["val_iou"] for r in runs], 4)]
        cells += [f"{np.mean([r['by_source'][s] for r in runs]):.3f}" for s in sources]
        cells += [spread([r["held_out"][c] for r in runs]) for c in held_out]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="validate.py records (NAME.json)")
    args = parser.parse_args()
    records = [json.loads(p.read_text()) for p in args.records if not p.name.endswith(".history.json")]
    print(table(expand(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
