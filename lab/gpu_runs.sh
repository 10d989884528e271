#!/usr/bin/env bash
# Many training runs at once on one GPU machine (16 cores): the GPU runs of lab/NOTES.md.
#
#   lab/gpu_runs.sh TRAIN_DIR OUT_DIR JOB...
#
# A JOB is "val:NAME:KEY=VALUE,..." (lab/validate.py with davis.blackswan held out, --set from
# the list) or "train:NAME:ARGS" (segmentation.py train ARGS --out OUT_DIR/NAME.pth, ARGS split on
# commas). One process a job with 2 CPU threads: on a GPU the step is bound by the CPU-side
# augmentation, so runs side by side use the machine; their times are not solo times.
set -u
train=$1 out=$2
shift 2
mkdir -p "$out"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
: "${SEGMENTATION_ENCODER_WEIGHTS:?set it to the MobileNetV2 ImageNet state_dict}"
python=${PYTHON:-python3}
for job in "$@"; do
    IFS=: read -r kind name spec <<<"$job"
    IFS=, read -r -a items <<<"$spec"
    case $kind in
        val) $python -m lab.validate "$name" --train "$train" --hold-out davis.blackswan \
                 --predict-sizes 288 --out "$out" --set "${items[@]}" ;;
        train) $python segmentation.py train "$train" --out "$out/$name.pth" "${items[@]}" ;;
        *) echo "unknown job kind: $job" >&2; exit 2 ;;
    esac >"$out/$name.log" 2>&1 &
done
wait
