"""How far the short run's fingerprint moves on another kind of CPU, and how far a moved default
moves it (2026-12-07, issue 53): the figures behind lab/same_numbers.py's TOLERANCE.

    OMP_NUM_THREADS=1 python -m lab.once.same_numbers_tolerance
    python -m lab.once.same_numbers_tolerance --table    # the table again, from the record

Each case runs in a fresh process. Another kind of CPU is had here by narrowing the vector units
torch uses: ATEN_CPU_CAPABILITY=default (ATen's kernels without AVX) with
ONEDNN_MAX_CPU_ISA=SSE41 (oneDNN's convolutions without AVX). Writes
lab/results/same-numbers/tolerance.json and prints the largest difference of each case from
this machine's native run (relative); then a table of every figure's difference, beside
lab/same_numbers.py's TOLERANCE, as tolerance.md.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from lab.same_numbers import TOLERANCE, differences, tolerance

OUT = Path("lab/results/same-numbers/tolerance.json")
# A moved default is measured on the random encoder alone.
CHILD = """
import json, sys
from lab import same_numbers as pins
changes = json.loads(sys.argv[1])
encoders = {"random-encoder": None} if changes else pins.ENCODERS
print(json.dumps({"machine": pins.machine(), "runs": pins.measure(encoders, **changes)}))
"""
NARROW = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
CASES = {
    "native": ({}, {}),
    "native, again": ({}, {}),
    "ATen without AVX": ({"ATEN_CPU_CAPABILITY": "default"}, {}),
    "ATen and oneDNN without AVX": (NARROW, {}),
    "lr+0.1%": ({}, {"lr": 0.001 * 1.001}),
    "one more step": ({}, {"steps": 5}),
    "seed 1": ({}, {"seed": 1}),
}


def run(env: dict, changes: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(changes)], text=True,
                            capture_output=True, env={**os.environ, **env}, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])




def table(made: dict) -> str:
    """Every figure's relative difference from the native run, a row per case and encoder."""
    native = made["native"]["runs"]
    keys = list(native["random-encoder"]["fingerprint"])
    lines = ["| case | encoder | vector units | " + " | ".join(keys) + " | digest |",
             "|---|---|---|" + "---|" * (len(keys) + 1)]
    for name, case in made.items():
        for encoder, run in case["runs"].items():
            off = differences(run["fingerprint"], native[encoder]["fingerprint"])
            cells = [f"**{off[k]:.1e}**" if off[k] > tolerance(k) else f"{off[k]:.1e}"
                     for k in keys]
            same = "same" if run["digest"] == native[encoder]["digest"] else "differs"
            lines.append(f"| {name} | {encoder} | {case['machine']['cpu_capability']} | "
                         + " | ".join(cells) + f" | {same} |")
    limits = ", ".join(f"{kind} {value:.0e}" for kind, value in TOLERANCE.items())
    return "\n".join(lines) + f"\n\nTolerance: {limits}; bold: beyond it.\n"


if sys.argv[1:] == ["--table"]:
    print(table(json.loads(OUT.read_text())), end="")
    sys.exit(0)
made = {name: {"env": env, "changes": changes, **run(env, changes)}
        for name, (env, changes) in CASES.items()}
native = made["native"]["runs"]
for name, case in made.items():
    case["largest_difference"] = {}
    for encoder, figures in case["runs"].items():
        off = differences(figures["fingerprint"], native[encoder]["fingerprint"])
        worst = max(off, key=off.get)
        case["largest_difference"][encoder] = {"figure": worst, "difference": off[worst],
                                               "same_digest": figures["digest"]
                                               == native[encoder]["digest"]}
        print(f"{name:28s} {encoder:17s} {case['machine']['cpu_capability']:8s} "
              f"{off[worst]:.2e} ({worst}), digest "
              f"{'same' if figures['digest'] == native[encoder]['digest'] else 'differs'}",
              flush=True)
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(made, indent=1) + "\n")
OUT.with_suffix(".md").write_text(table(made))
print(table(made), end="")
