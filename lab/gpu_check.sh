#!/usr/bin/env bash
# The GPU measurements that the CPU cannot make, in one call on a lent GPU machine:
#
#   lab/gpu_check.sh TRAIN_DIR TEST_DIR OUT_DIR [STEPS]
#
# 1. the shipped recipe alone (seed 0): wall time and peak memory (/usr/bin/time -v), the GPU's
#    utilisation and memory sampled every second by nvidia-smi (OUT/nvidia-smi-solo.csv);
# 2. the same with --precision fp16 forced, what a T4/P100/V100 gets: it must run;
# 3. both checkpoints graded on TEST_DIR (run_tests.py --json).
# STEPS (default: the package's default length) shortens everything for a rehearsal on the
# CPU, where the nvidia-smi sampling is skipped and fp16 is refused (the script says so and goes on).
set -u
train=$1 test=$2 out=$3
length=()  # no --steps: the default length for the data's size
[ -n "${4:-}" ] && length=(--steps "$4")
mkdir -p "$out"
export PYTHONUNBUFFERED=1
: "${SEGMENTATION_ENCODER_WEIGHTS:?set it to the MobileNetV2 ImageNet state_dict}"
python=${PYTHON:-python3}

sample_gpu() {  # $1: file; samples until killed
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw \
            --format=csv,noheader -l 1 >"$1" 2>&1
    else
        echo "no nvidia-smi: not sampled" >"$1"
    fi
}

for run in solo:auto fp16:fp16; do
    IFS=: read -r name precision <<<"$run"
    sample_gpu "$out/nvidia-smi-$name.csv" &
    sampler=$!
    /usr/bin/time -v $python segmentation.py train "$train" "${length[@]}" --seed 0 \
        --precision "$precision" --out "$out/$name.pth" --overwrite >"$out/$name.log" 2>&1
    echo "$name: exit $? ($(grep -E 'Elapsed|Maximum resident' "$out/$name.log" | tr -s ' ' | tr '\n' ';'))"
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    if [ -f "$out/$name.pth" ]; then
        $python run_tests.py "$test" --model "$out/$name.pth" --json "$out/$name.json" \
            >"$out/$name.grade.txt" 2>&1
        tail -n 2 "$out/$name.grade.txt"
    fi
done
