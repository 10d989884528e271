#!/usr/bin/env bash
# Set up .venv with the PyTorch build that fits this machine, and check that it works:
#
#   bash tools/setup.sh            # choose: the CUDA build with an NVIDIA GPU, else CPU-only on Linux
#   bash tools/setup.sh --cpu      # the CPU-only build whatever the machine has (about 1 GB, not 5.8)
#   bash tools/setup.sh --gpu      # the ordinary (CUDA on Linux) build
#   bash tools/setup.sh --dry-run  # print the commands, run none
#
# On Linux, a plain `pip install torch` brings the CUDA build and its NVIDIA libraries (5.8 GB
# in all), GPU or not; PyTorch's CPU-only index has the same torch without them. If that index
# does not answer within INDEX_TIMEOUT seconds (default 10), or what it gave fails the check,
# the ordinary build is installed instead. The check (tools/check_env.py): torch and torchvision
# import together, an operator of torchvision runs, get_model() does a forward pass. An
# existing .venv is kept and only checked. PYTHON (default python3) makes the environment;
# VENV (default .venv) is where it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CPU_INDEX=${CPU_INDEX:-https://download.pytorch.org/whl/cpu}
INDEX_TIMEOUT=${INDEX_TIMEOUT:-10}
REBUILD="rm -rf $VENV && bash tools/setup.sh"
choice=auto dry=0
for arg in "$@"; do
  case "$arg" in
    --cpu) choice=cpu ;;
    --gpu) choice=gpu ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (--cpu, --gpu, --dry-run)" >&2; exit 2 ;;
  esac
done
say() { echo "setup.sh: $*" >&2; }
run() { echo "+ $*"; if [ "$dry" = 0 ]; then "$@"; fi; }
verify() {  # runs the check; its one line in $line, its exit status the check's
  if [ "$dry" = 1 ]; then echo "+ $VENV/bin/python tools/check_env.py"; line="works (dry run)"; return 0; fi
  line=$("$VENV/bin/python" tools/check_env.py 2>&1)
}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  say "$PYTHON not found: install Python 3 (3.9 or newer, with its venv module), or name one with PYTHON=/path/to/python3"
  exit 1
fi
if [ -e "$VENV" ] && [ "$dry" = 0 ]; then  # never replaced: checked, and the way to rebuild it said
  if [ ! -x "$VENV/bin/python" ]; then
    say "$VENV exists but holds no bin/python (not a virtual environment?): kept as it is; to build one there: $REBUILD"
    exit 1
  fi
  if verify; then
    echo "$VENV exists and is kept; it $line. To rebuild it: $REBUILD"
    exit 0
  fi
  say "$VENV exists and is kept, but it ${line}; to rebuild it: $REBUILD"
  exit 1
fi

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
run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/python" -m pip install --quiet --upgrade pip
if [ "$choice" = cpu ]; then
  # First and alone: requirements then find torch installed and download no CUDA build.
  # The index is asked once, briefly: pip alone would retry an unreachable host for minutes.
  probe='import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))'
  not_had=""
  if [ "$dry" = 0 ] && ! "$VENV/bin/python" -c "$probe" "$CPU_INDEX/torch/" "$INDEX_TIMEOUT" >/dev/null 2>&1; then
    not_had="its index $CPU_INDEX did not answer within $INDEX_TIMEOUT s"
  elif ! run "$VENV/bin/python" -m pip install --quiet --timeout "$INDEX_TIMEOUT" --retries 1 \
      torch torchvision --index-url "$CPU_INDEX"; then
    not_had="pip could not install it from $CPU_INDEX"
  elif ! verify; then
    not_had="it ${line}"
    run "$VENV/bin/python" -m pip uninstall --quiet -y torch torchvision
  fi
  if [ -n "$not_had" ]; then
    echo "The CPU-only build cannot be had ($not_had): installing the ordinary build instead (5.8 GB on Linux)"
  fi
fi
run "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
if ! verify; then
  say "the new $VENV does not work: ${line#does not work: }; install a matching pair in it ($VENV/bin/python -m pip install --force-reinstall torch torchvision) or rebuild it: $REBUILD --gpu"
  exit 1
fi
echo "done: $VENV $line; $VENV/bin/python run_tests.py grades the shipped model"
