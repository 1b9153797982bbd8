#!/usr/bin/env bash
# One lent GPU, one command (the device tool allows 600 s): issue 6 first, then profiles.
# Results go to OUT (default: $OUT, else ./gpu-out).
#
#   bash bench/gpu_lease.sh [OUT]
#
# 1. bench/stage2_gpu.sh on the paper's protocol: 20,000 + 10,000 GPU-rendered images, the
#    default recipe trained for TRAIN_S seconds on 16,000 of them with SYNTHETIC (0.5: half
#    of each batch gets a swapped signal, docs/network.md; SYNTHETIC=0 for the plain recipe),
#    the small and the large test sets predicted (the large one also with --tta), Tables 1
#    and 3, then the group FSC with predicted poses if time is left;
# 2. with the time still left, the training-step profile (where a step's time goes), then
#    the Stage 1 / refinement profile.
# The earlier leases' one-off figures (prediction throughput, align/refine on 1,000 images,
# the paper recipe's speed) are in docs/gpu.md and are not repeated.
#
# Packages missing on the GPU machine (gemmi, mrcfile, starfile, ...) travel as wheels in
# .whl/ (docs/gpu.md says which); they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
OUT=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
OUT="$OUT" BUDGET_S="${BUDGET_S:-$((545 - SECONDS))}" TRAIN_S="${TRAIN_S:-400}" \
  SYNTHETIC="${SYNTHETIC-0.5}" bash bench/stage2_gpu.sh --steps reconstruct
left=$((585 - SECONDS))
if [ "$left" -gt 40 ]; then
  timeout $((left > 75 ? 75 : left)) python3 bench/gpu_train_profile.py --batches 256 \
    --repeats 15 --out "$OUT/train_profile.json" | tail -12
fi
left=$((585 - SECONDS))
if [ "$left" -gt 60 ]; then
  timeout "$left" python3 bench/gpu_align_profile.py --simulate 1024 \
    --out "$OUT/align_profile.json" | tail -8
fi
echo "lease script: ${SECONDS} s"
