"""Pool lab/birds.py's runs: a row per recipe and training size, its seeds' mean, worst and
spread on the class's test photos, and the default's curve against the number of training pairs.

    python -m lab.birds_summary lab/results/birds/*.json [--figure docs/birds-curve.png]

Writes the table to stdout (and beside the records as summary.md with --write). The figure shows
every run of the default recipe (a dot per seed, the mean joined) against its training pairs on
a log scale, with the least-squares line IoU = a + b log2(pairs) through the runs, drawn on to
`--extrapolate` pairs (the course's ~8,400): a doubling's gain measured on this range, which
real curves bend below as they saturate, so the far end is an optimistic reading.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from run_tests import marks_for  # noqa: E402


def recipe(record: dict) -> str:
    """A run's recipe: its options other than the seed, as text ('defaults' when none)."""
    options = {k: v for k, v in record["options"].items() if k != "seed"}
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"


def table(records: List[dict]) -> str:
    """A markdown row per (recipe, training pairs): seeds, mean, worst, spread, minutes."""
    groups: Dict[Tuple[str, int], List[dict]] = {}
    for record in records:
        groups.setdefault((recipe(record), record["train_pairs"]), []).append(record)
    lines = ["| recipe | pairs | steps | seeds | test birds IoU: mean | worst | spread | marks | "
             "missed / painted (of the bird) | smaller / larger half | minutes (each) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, pairs), runs in sorted(groups.items(), key=lambda item: (item[0][0] != "defaults",
                                                                         item[0])):
        ious = [r["test"]["iou"] for r in runs]
        mean = float(np.mean(ious))
        # A run on the clock (minutes) stops where it gets to: the range of its seeds' steps.
        steps = sorted({r["steps"] for r in runs})
        reached = f"{steps[0]:,}" + (f"-{steps[-1]:,}" if len(steps) > 1 else "")
        lines.append(
            f"| {name} | {pairs} | {reached} | "
            f"{', '.join(str(r['options'].get('seed', 0)) for r in runs)} | {mean:.4f} | "
            f"{min(ious):.4f} | {max(ious) - min(ious):.4f} | {marks_for(mean)} | "
            f"{np.mean([r['test']['missed_share'] for r in runs]):.1%} / "
            f"{np.mean([r['test']['painted_share'] for r in runs]):.1%} | "
            f"{np.mean([r['test']['smaller_half_iou'] for r in runs]):.3f} / "
            f"{np.mean([r['test']['larger_half_iou'] for r in runs]):.3f} | "
            f"{', '.join(format(r['train_minutes'], '.0f') for r in runs)} |")
    return "\n".join(lines) + "\n"


def curve(records: List[dict], extrapolate: int) -> dict:
    """The default's runs by training pairs, and the log-linear fit read at `extrapolate`."""
    runs = [(r["train_pairs"], r["test"]["iou"]) for r in records if recipe(r) == "defaults"]
    pairs = np.array([p for p, _ in runs], dtype=float)
    ious = np.array([i for _, i in runs])
    fit = None
    if len(set(pairs)) >= 2:
        doublings = np.log2(pairs)
        # The line's own uncertainty, from 4 runs on (3 leave it one residual degree of freedom).
        if len(runs) > 3:
            (slope, intercept), cov = np.polyfit(doublings, ious, 1, cov=True)
        else:
            (slope, intercept), cov = np.polyfit(doublings, ious, 1), None
        residual = ious - (intercept + slope * doublings)
        fit = {"per_doubling": float(slope), "at": extrapolate,
               "predicted": float(intercept + slope * np.log2(extrapolate)),
               "residual_sd": float(residual.std(ddof=2)) if len(runs) > 2 else None,
               "intercept": float(intercept), "cov": None if cov is None else cov.tolist(),
               "standard_error": None}
        if cov is not None:
            fit["standard_error"] = float(line_error(fit, np.array([extrapolate]))[0])
    return {"runs": runs, "fit": fit}


def line_error(fit: dict, pairs: np.ndarray) -> np.ndarray:
    """One standard error of the fitted line at each of `pairs`, from its coefficients' cov."""
    at = np.stack([np.log2(pairs), np.ones(len(pairs))], axis=1)
    return np.sqrt(np.einsum("ni,ij,nj->n", at, np.array(fit["cov"]), at))


def figure(path: Path, result: dict, class_name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    runs = result["runs"]
    sizes = sorted({p for p, _ in runs})
    ax.scatter([p for p, _ in runs], [i for _, i in runs], color="#555555", s=18, zorder=3,
               label="a run (one seed)")
    ax.plot(sizes, [np.mean([i for p, i in runs if p == s]) for s in sizes], color="#0072b2",
            marker="o", label="mean over seeds")
    fit = result["fit"]
    if fit:
        xs = np.geomspace(min(sizes), fit["at"], 50)
        line = fit["intercept"] + fit["per_doubling"] * np.log2(xs)
        ax.plot(xs, line, color="#d55e00",
                linestyle="--", label=f"log-linear fit: {fit['per_doubling']:+.3f} a doubling")
        if fit["cov"]:
            band = 2 * line_error(fit, xs)
            ax.fill_between(xs, line - band, line + band, color="#d55e00", alpha=0.12,
                            linewidth=0, label="the line ± 2 standard errors")
        ax.annotate(f"{fit['at']:,} pairs: {fit['predicted']:.3f}\n(an optimistic reading)",
                    (fit["at"], fit["predicted"]), textcoords="offset points", xytext=(-120, -30),
                    fontsize=8, arrowprops=dict(arrowstyle="->", color="#d55e00"))
    for threshold, marks in ((0.85, 10), (0.80, 9)):
        ax.axhline(threshold, color="#bbbbbb", linewidth=0.8)
        ax.text(min(sizes), threshold + 0.002, f"{marks} marks", fontsize=7, color="#777777")
    ax.set_xscale("log")
    ticks = sizes + ([fit["at"]] if fit else [])
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:,}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training pairs (bird photos with masks)")
    ax.set_ylabel(f"mean IoU, {class_name} test photos")
    ax.set_title("The default recipe trained on birds alone", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_runs(paths: List[Path]) -> List[dict]:
    """The run records among `paths`; other JSON beside them (predict-size.json) is named and
    skipped, so that `lab/results/birds/*.json` can be passed as it is."""
    records = []
    for path in paths:
        record = json.loads(path.read_text())
        if isinstance(record, dict) and {"options", "train_pairs", "test"} <= record.keys():
            records.append(record)
        else:
            print(f"skipping {path}: not a lab/birds.py run record", file=sys.stderr)
    if not records:
        raise SystemExit("none of the files given is a lab/birds.py run record")
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--extrapolate", type=int, default=8382)
    parser.add_argument("--write", action="store_true", help="also write summary.md beside them")
    args = parser.parse_args()
    records = read_runs(args.records)
    text = table(records)
    result = curve(records, args.extrapolate)
    if result["fit"]:
        fit = result["fit"]
        text += (f"\nThe default's runs, IoU = a + b log2(pairs): {fit['per_doubling']:+.4f} a "
                 f"doubling; read at {fit['at']:,} pairs: {fit['predicted']:.3f}"
                 + (f" ± {fit['standard_error']:.3f} (one standard error of the line there)"
                    if fit["standard_error"] else "")
                 + (f"; residual sd {fit['residual_sd']:.4f}" if fit["residual_sd"] else "")
                 + ".\n")
    print(text)
    if args.write:
        (args.records[0].parent / "summary.md").write_text(text)
    if args.figure and result["runs"]:
        figure(args.figure, result, records[0]["class"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
