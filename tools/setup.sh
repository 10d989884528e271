#!/usr/bin/env bash
# Set up .venv with the PyTorch build that fits this machine, before anything else is downloaded:
#
#   bash tools/setup.sh            # choose: the CUDA build with an NVIDIA GPU, else CPU-only on Linux
#   bash tools/setup.sh --cpu      # the CPU-only build whatever the machine has (about 1 GB, not 5.8)
#   bash tools/setup.sh --gpu      # the ordinary (CUDA on Linux) build
#   bash tools/setup.sh --dry-run  # print the commands, run none
#
# On Linux, a plain `pip install torch` brings the CUDA build and its NVIDIA libraries (5.8 GB
# in all), GPU or not; PyTorch's CPU-only index has the same torch without them. macOS and
# Windows wheels carry no CUDA, so there the ordinary install is the small one.
# PYTHON (default python3) makes the environment; VENV (default .venv) is where it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CPU_INDEX=https://download.pytorch.org/whl/cpu
choice=auto dry=0
for arg in "$@"; do
  case "$arg" in
    --cpu) choice=cpu ;;
    --gpu) choice=gpu ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (--cpu, --gpu, --dry-run)" >&2; exit 2 ;;
  esac
done
if [ "$choice" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    choice=gpu why="an NVIDIA GPU is present ($(nvidia-smi -L | head -n 1))"
  elif [ "$(uname -s)" = Linux ]; then
    choice=cpu why="no NVIDIA GPU found (nvidia-smi), so the CPU-only build"
  else
    choice=gpu why="$(uname -s): its ordinary PyTorch build has no CUDA in it"
  fi
else
  why="asked for with --$choice"
fi
echo "PyTorch build: $( [ "$choice" = cpu ] && echo CPU-only || echo ordinary) ($why)"
run() { echo "+ $*"; if [ "$dry" = 0 ]; then "$@"; fi; }
run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/python" -m pip install --quiet --upgrade pip
if [ "$choice" = cpu ]; then
  # First and alone: requirements then find torch installed and download no CUDA build.
  run "$VENV/bin/python" -m pip install torch torchvision --index-url "$CPU_INDEX"
fi
run "$VENV/bin/python" -m pip install -r requirements-dev.txt
echo "done: $VENV/bin/python run_tests.py grades the shipped model"
