#!/usr/bin/env bash
# One lent GPU, one command: the training and alignment profiles, then every GPU measurement
# of bench/gpu_session.py, in about 9 minutes. Results go to OUT (default: $OUT, else ./gpu-out).
#
#   bash bench/gpu_lease.sh [OUT]
#
# Packages missing on the GPU machine (gemmi, mrcfile, starfile, ...) travel as wheels in
# .whl/ (docs/gpu.md says which); they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 90 python3 bench/gpu_train_profile.py --out "$OUT/train_profile.json" | tail -12
timeout 120 python3 bench/gpu_align_profile.py --simulate 1024 --out "$OUT/align_profile.json" \
  | tail -8
# 60,000 labelled images: BENCHMARK.md's calibration reached Table 3 with 50,000, not 14,055.
python3 bench/gpu_session.py --out "$OUT" --budget-s "${BUDGET_S:-360}" --throughput-workers=-1 \
  --sim-device cuda --n-set1 "${N_SET1:-60000}" --n-test "${N_TEST:-10000}" \
  --train-timeout-s "${TRAIN_S:-180}" --steps reconstruct,throughput,align,refine
