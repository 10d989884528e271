#!/usr/bin/env bash
# Grade the upload in the course grader's own environment: Python 3.9, torch 1.10.0,
# torchvision 0.11.1 (the versions its build script installs), on the CPU.
#
#   bash tools/grader_env.sh [DATA_DIR]        (default: run_tests.py's own choice of data)
#   bash tools/grader_env.sh --find-python     (prints the Python 3.9 it would build from)
#
# Builds .grader-venv/ once (about 2.2 GB; reused while its requirements are unchanged), grades
# segmentation.py + segmentation_model.pth there and with this project's own Python, and fails
# when the upload does not load or run there, or when the two mean IoUs differ by more than
# MAX_IOU_GAP. Without Python 3.9 it says so and exits 0: nothing to check against.
# Environment: GRADER_PYTHON (a Python 3.9 to build from), PROJECT_PYTHON (default .venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.grader-venv
REQUIREMENTS="torch==1.10.0 torchvision==0.11.1 numpy<1.23 pillow<10 scikit-image<0.20"
MAX_IOU_GAP=0.002
PROJECT_PYTHON=${PROJECT_PYTHON:-.venv/bin/python}
[ -x "$PROJECT_PYTHON" ] || PROJECT_PYTHON=python3

find_python39() {
  if [ -n "${GRADER_PYTHON:-}" ]; then
    "$GRADER_PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null \
      && echo "$GRADER_PYTHON"
    return 0
  fi
  # A python3.9 on the PATH as it is; pyenv's shim needs a version named: each installed 3.9.x.
  local candidates=("python3.9") version
  if command -v pyenv >/dev/null 2>&1; then
    while read -r version; do
      candidates+=("env PYENV_VERSION=$version python3.9")
    done < <(pyenv versions --bare 2>/dev/null | grep -E '^3\.9(\.[0-9]+)?$' | sort -t. -k3 -nr)
  fi
  for candidate in "${candidates[@]}"; do
    if $candidate -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
      $candidate -c 'import sys; print(sys.executable)'
      return 0
    fi
  done
}

if [ "${1:-}" = "--find-python" ]; then  # which Python 3.9 would be used, and nothing else
  find_python39
  exit 0
fi

if [ "$(cat "$VENV/requirements.txt" 2>/dev/null)" != "$REQUIREMENTS" ]; then
  PY39=$(find_python39)
  if [ -z "$PY39" ]; then
    echo "grader environment: SKIPPED, no Python 3.9 found (set GRADER_PYTHON=/path/to/python3.9)"
    exit 0
  fi
  echo "grader environment: building $VENV from $PY39 ($REQUIREMENTS)"
  rm -rf "$VENV"
  "$PY39" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade "pip<25"
  # shellcheck disable=SC2086  # the requirements are separate words
  "$VENV/bin/python" -m pip install --quiet $REQUIREMENTS
  echo "$REQUIREMENTS" > "$VENV/requirements.txt"
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "== the grader's environment ($VENV)"
"$PROJECT_PYTHON" run_tests.py "$@" --python "$VENV/bin/python" --json "$OUT/grader.json"
echo "== this project's environment ($PROJECT_PYTHON)"
"$PROJECT_PYTHON" run_tests.py "$@" --json "$OUT/project.json"
"$PROJECT_PYTHON" - "$OUT/grader.json" "$OUT/project.json" "$MAX_IOU_GAP" <<'PY'
import json, sys
grader, project = (json.load(open(p)) for p in sys.argv[1:3])
gap, limit = abs(grader["mean_iou"] - project["mean_iou"]), float(sys.argv[3])
print(f"grader environment: mean IoU {grader['mean_iou']:.4f} (torch {grader['environment']['torch']}) "
      f"vs {project['mean_iou']:.4f} (torch {project['environment']['torch']}): "
      f"{'OK' if gap <= limit else 'FAILED'}, difference {gap:.4f} (at most {limit})")
sys.exit(0 if gap <= limit else 1)
PY
