#!/usr/bin/env bash
# One lent GPU, one command (the device tool allows 600 s): issue 6's open GPU checks.
# Results go to OUT (default: $OUT, else ./gpu-out).
#
#   bash bench/gpu_lease.sh [OUT]
#
# bench/stage2_gpu.sh on the paper's protocol with Stage-1 labels (docs/gpu.md, "The next
# lease"): 20,000 + 10,000 GPU-rendered images; `align --device cuda` labels image set 1
# (ground truth instead past STAGE1_S); the default recipe with the signal swap trained for
# TRAIN_S seconds on 16,000 of them; both test sets predicted (the large one also with
# --tta) and scored against the truth; then the prediction throughput on 200,000 rows
# with each reader (threads, processes), and the readers alone (bench/read_images.py).
# Run 3 (H100) measured the profiles (bench/gpu_train_profile.py, bench/gpu_align_profile.py);
# they run here only if time is left.
#
# LABELS=truth TRAIN_S=400 STEPS=reconstruct repeats run 3.
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
OUT="$OUT" BUDGET_S="${BUDGET_S:-$((560 - SECONDS))}" TRAIN_S="${TRAIN_S:-330}" \
  LABELS="${LABELS:-stage1}" STAGE1_S="${STAGE1_S:-150}" SYNTHETIC="${SYNTHETIC-0.5}" \
  bash bench/stage2_gpu.sh --steps "${STEPS:-throughput}"
left=$((585 - SECONDS))
if [ "$left" -gt 25 ]; then
  timeout $((left > 40 ? 40 : left)) python3 bench/read_images.py --workers 0,2,4,8 \
    --repeats 1 | tail -14
  cp bench/results/read_images.json "$OUT/" 2>/dev/null
fi
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
