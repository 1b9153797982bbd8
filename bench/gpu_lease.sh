#!/usr/bin/env bash
# One lent GPU, one command (the device tool allows 600 s): issue 6 first, then profiles.
# Results go to OUT (default: $OUT, else ./gpu-out).
#
#   bash bench/gpu_lease.sh [OUT]
#
# 1. the training-step profile (≤ 75 s, batches 256 and 512): where a step's time goes;
# 2. bench/stage2_gpu.sh: 60,000 + 10,000 images, the default recipe trained for TRAIN_S
#    seconds, Tables 1 and 3, then the group FSC with predicted poses if time is left;
# 3. with the time still left, the Stage 1 / refinement profile.
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
timeout 75 python3 bench/gpu_train_profile.py --batches 256,512 --repeats 15 \
  --out "$OUT/train_profile.json" | tail -12
OUT="$OUT" BUDGET_S="${BUDGET_S:-430}" TRAIN_S="${TRAIN_S:-280}" \
  bash bench/stage2_gpu.sh --steps reconstruct
left=$((585 - SECONDS))
if [ "$left" -gt 60 ]; then
  timeout "$left" python3 bench/gpu_align_profile.py --simulate 1024 \
    --out "$OUT/align_profile.json" | tail -8
fi
echo "lease script: ${SECONDS} s"
