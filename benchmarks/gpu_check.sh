#!/usr/bin/env bash
# Every GPU figure of the benchmarks, taken again in one go on one CUDA GPU (under 8
# minutes: each step has a time limit, the sum of which is 470 s), each printed with the command that produced it:
#
#   1. DCGAN training step, Lightning module vs a plain PyTorch loop, at full width (benchmarks/dcgan_throughput.py): G 5 layers batch 64 (exp1, exp2) and 6 layers batch 8 (exp3),
#      each in fp32 and bf16-mixed -> images/s of both and their ratio (goal >= 0.95).
#   2. YOLO face-mask training at 640 px, fp16, Lightning vs ultralytics' own trainer (benchmarks/yolo_step.py)
#      -> s per batch and per epoch and their ratio. Speed only: val mAP50 needs 30 epochs and seeds 0, 1, 2 (YOLO_EPOCHS=30, SEEDS).
#   3. exp1 as `make exp1-dcgan ARGS="trainer=gpu data=fruits360_real"` runs it (the train entry, the gpu profile:
#      bf16-mixed, channels_last, full width, all images) -> images/s per epoch including the epoch's FID/KID,
#      sample grid and checkpoint, from the times at which the epochs' metrics reached MLflow (epochs 2 on).
#
# Usage, from the repository root:  benchmarks/gpu_check.sh      (PY=<python>, SHARED_DATA=<real data folder>,
# YOLO_EPOCHS=<n>, SEEDS="0 1 2", OUT=<folder for logs> to change). Exits 1 with one line when no CUDA device is
# present; a step that fails or runs out of time is reported and the others still run; the exit status is then 3.
set -u -o pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED_DATA=${SHARED_DATA:-${ML_PLAYGROUND_SHARED_DATA:-../shared/data}}
YOLO_EPOCHS=${YOLO_EPOCHS:-10}
SEEDS=${SEEDS:-0}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False with $PY); these figures need one GPU" >&2
    exit 1
fi
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT"
"$PY" -c "import torch, pytorch_lightning as pl; print(f'gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, Lightning {pl.__version__}, $(date -u +%F)')"

failed=0
# step <label> <seconds> <command...>: run it under a time limit, print the command and then its figure lines.
step() {
    local label=$1 limit=$2
    shift 2
    local log="$OUT/$label.log"
    echo
    echo "== $label (limit ${limit} s)"
    echo "\$ $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        failed=1
        echo "gpu_check: $label FAILED (exit $rc$([ $rc -eq 124 ] && echo ", over ${limit} s")); last lines of $log:"
        tail -n 5 "$log" | sed 's/^/    /'
        return 0
    fi
    grep -E "images/s|ratio|s per training batch|speed per batch|^figure" "$log" | sed 's/^/    /'
    echo "    ($((SECONDS - start)) s)"
}

# 1. DCGAN step ratio at full width, fp32 and bf16 (4 x 45 s)
for config in "5 64" "6 8"; do
    set -- $config
    for precision in 32-true bf16-mixed; do
        step "dcgan_${1}layers_batch${2}_${precision}" 45 \
            "$PY" -m benchmarks.dcgan_throughput --device gpu --precision "$precision" --width 1.0 \
            --layers "$1" --batch "$2" --steps 200 --warmup 20
    done
done

# 2. YOLO at 640 px, fp16, Lightning vs ultralytics (210 s)
if [ -d "$SHARED_DATA/facemask-voc" ] && [ -f "$SHARED_DATA/weights/yolov5n.pt" ]; then
    for seed in $SEEDS; do
        step "yolo_640px_fp16_seed$seed" 210 \
            "$PY" -m benchmarks.yolo_step --voc "$SHARED_DATA/facemask-voc" \
            --pretrained "$SHARED_DATA/weights/yolov5n.pt" --device gpu --precision 16-mixed --imgsz 640 \
            --batch 16 --workers 8 --epochs "$YOLO_EPOCHS" --seed "$seed" --inference-repeats 1 \
            --json "$OUT/yolo_640px_fp16_seed$seed.json"
    done
else
    failed=1
    echo "gpu_check: YOLO skipped: $SHARED_DATA/facemask-voc or $SHARED_DATA/weights/yolov5n.pt not found"
fi

# 3. exp1 through the train entry with the gpu profile (80 s)
if [ -d "$SHARED_DATA/fruits360/Training" ]; then
    step exp1_entry_gpu_profile 80 \
        "$PY" -m experiments.train experiment=exp1_dcgan_fruits data=fruits360_real trainer=gpu epochs=4 \
        log_model=false system_metrics.enabled=false trainer.enable_progress_bar=false \
        "paths.shared_data=$SHARED_DATA" "paths.log_dir=$OUT/logs" "paths.mlflow_dir=$OUT" \
        "paths.cache_dir=$OUT/cache"
    if [ -f "$OUT/mlflow.db" ]; then
        "$PY" - "$OUT" <<'EOF'
import json
import sys

import mlflow

client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{sys.argv[1]}/mlflow.db")
[run] = client.search_runs([client.get_experiment_by_name("exp1_dcgan_fruits").experiment_id])
images = json.loads(run.inputs.dataset_inputs[0].dataset.profile)["images"]  # the datamodule's count
written = {m.step: m.timestamp for m in client.get_metric_history(run.info.run_id, "train/g_loss_epoch")}
steps = sorted(written)[1:]  # epoch 1 pays the warm-up (cuDNN autotuning, the image cache)
seconds = (written[steps[-1]] - written[steps[0]]) / 1000
print(
    f"    figure: exp1, train entry, trainer=gpu: {images * (len(steps) - 1) / seconds:.1f} images/s per epoch "
    f"({images} images, epochs {steps[0] + 1}-{steps[-1]}: {seconds / (len(steps) - 1):.2f} s each, "
    "incl. FID/KID, grid, checkpoint)"
)
EOF
    fi
else
    failed=1
    echo "gpu_check: exp1 skipped: $SHARED_DATA/fruits360/Training not found"
fi

echo
echo "gpu_check: logs in $OUT"
if [ $failed -ne 0 ]; then
    echo "gpu_check: some figures were not taken (see above)" >&2
    exit 3
fi
