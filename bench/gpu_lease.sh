#!/usr/bin/env bash
# One lent GPU: issue 6's open GPU checks, in one call of the device tool (at most 600 s) or
# two. Results go to OUT (default: $OUT, else ./gpu-out).
#
#   bash bench/gpu_lease.sh [OUT]                  # PART=all: speed, then accuracy (~9.5 min)
#   PART=speed bash bench/gpu_lease.sh [OUT]       # ~3.5 min
#   PART=accuracy bash bench/gpu_lease.sh [OUT]    # ~9.5 min, training 400 s
#
# speed: `deephemnma predict` end to end on 200,000 rows with each reader
#   (bench/predict_speed.py; goal >= 20,000 images/s on one H100), then the readers alone
#   (bench/read_images.py), in order from one stack and at random over 1,000 stacks, then a
#   training step (batch 256 and 512) with and without CUDA graphs
#   (bench/gpu_train_profile.py; run 5's H100: graphed 15.6 against 18.8 ms at 256, hence
#   train's default; CUDA_GRAPHS=0 runs the accuracy part without).
# accuracy: bench/stage2_gpu.sh on the paper's protocol with Stage-1 labels (docs/gpu.md,
#   "The next lease"): 20,000 + 10,000 GPU-rendered images; `align --device cuda` labels image
#   set 1 (past STAGE1_S, the chunks finished by then); the default recipe with the signal swap
#   trained for TRAIN_S seconds (400 alone, 330 after speed) on 16,000 of them; both test
#   sets predicted (the large one also with --tta) and scored against the truth.
#
# With two calls (speed, then accuracy at once, before the machine goes idle), training gets
# run 3's 400 s. LABELS=truth TRAIN_S=400 STEPS=reconstruct PART=accuracy repeats run 3.
#
# Packages missing on the GPU machine (gemmi, mrcfile, starfile, ...) travel as wheels in
# .whl/ (docs/gpu.md says which); they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
OUT=${1:-${OUT:-gpu-out}}
PART=${PART:-all}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site/mrcfile ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:$PYTHONPATH
export PYTHONUNBUFFERED=1
python3 -c "import deephemnma, gemmi, mrcfile, starfile, typer, rich" || {
  echo "gpu_lease.sh: packages missing: run 'make gpu-wheels' here and carry .whl"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

if [ "$PART" = all ] || [ "$PART" = speed ]; then
  timeout 150 python3 bench/predict_speed.py --device cuda --n 200000 \
    --work /tmp/deephemnma-predict-speed | tail -12
  timeout 45 python3 bench/read_images.py --workers 0,2,4,8 --repeats 1 | tail -14
  timeout 60 python3 bench/read_images.py --files 1000 --order random --workers 0,4 --n 40960 \
    --repeats 1 --tag random | tail -12
  timeout 75 python3 bench/gpu_train_profile.py --batches 256,512 --repeats 20 --no-profile \
    --variants "+augment,+augment graphed" --out "$OUT/train_profile.json" | tail -6
  cp bench/results/predict_speed.json bench/results/read_images*.json "$OUT/" 2>/dev/null
  echo "speed: ${SECONDS} s"
fi
if [ "$PART" = all ] || [ "$PART" = accuracy ]; then
  default_train=$([ "$PART" = all ] && echo 330 || echo 400)
  OUT="$OUT" BUDGET_S="${BUDGET_S:-$((585 - SECONDS))}" TRAIN_S="${TRAIN_S:-$default_train}" \
    LABELS="${LABELS:-stage1}" STAGE1_S="${STAGE1_S:-150}" SYNTHETIC="${SYNTHETIC-0.5}" \
    bash bench/stage2_gpu.sh --steps "${STEPS:-none}"
fi
echo "lease script: ${SECONDS} s"
