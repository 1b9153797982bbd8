#!/usr/bin/env bash
# Stage 2 on the paper's §3.1 protocol, on one GPU (H100 / H200), in about 8 minutes:
#
#   simulate N_SET1 + N_TEST paper-ak images (256² at 0.325 Å, SNR 0.1, CTF 200 kV / 2 mm /
#   5,000 Å underfocus), in parallel shards on the CPU cores
#   → phase flip + downsample to 128² (0.65 Å)
#   → train the default recipe on image set 1 (splits: 2,000 validation, 2,000 small test)
#   → predict the small test set and the large test set (image set 2)
#   → evaluate against the ground truth, next to the paper's Tables 1–4.
#
# Labels are the ground truth of image set 1 (LABELS=truth). When a Stage-1 result exists,
# pass it with LABELS=path/to/stage1.star (any STAR whose rlnImageName rows name images of
# set1.star; the metrics stay against the ground truth).
#
# Needs a CUDA build of torch in $PYTHON (default: python). Knobs (environment):
#   WORK (/tmp/deephemnma-stage2-gpu)  N_SET1 (20000)  N_TEST (10000)  EPOCHS (60)
#   BATCH (256)  SHARDS (CPU cores)  NGPU (1; > 1 uses torchrun)  LABELS (truth)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
WORK=${WORK:-/tmp/deephemnma-stage2-gpu}
N_SET1=${N_SET1:-20000}
N_TEST=${N_TEST:-10000}
EPOCHS=${EPOCHS:-60}
BATCH=${BATCH:-256}
SHARDS=${SHARDS:-$(nproc)}
NGPU=${NGPU:-1}
LABELS=${LABELS:-truth}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DH="$PYTHON -m deephemnma"

mkdir -p "$WORK"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0))"

# 1. Simulate in shards (one process per core, one thread each), then preprocess each shard.
TOTAL=$((N_SET1 + N_TEST))
PER=$(( (TOTAL + SHARDS - 1) / SHARDS ))
stamp "simulating $TOTAL images in $SHARDS shards of $PER"
for s in $(seq 0 $((SHARDS - 1))); do
  OMP_NUM_THREADS=1 $DH simulate --preset paper-ak -n "$PER" --seed $((1000 + s)) \
    --chunk-size 500 -o "$WORK/sim_$s" --quiet >/dev/null &
done
wait
stamp "preprocessing to 128²"
for s in $(seq 0 $((SHARDS - 1))); do
  OMP_NUM_THREADS=1 $DH preprocess "$WORK/sim_$s/particles.star" --size 128 \
    -o "$WORK/pre_$s" --quiet >/dev/null &
done
wait

# 2. One STAR per image set (rows of the shards in order; image paths made relative to WORK).
"$PYTHON" - "$WORK" "$SHARDS" "$N_SET1" "$N_TEST" <<'EOF'
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from deephemnma.io.star import read_particles, select, write_particles

work, shards, n_set1, n_test = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tables = []
for s in range(shards):
    relocated = work / f"shard_{s}.star"
    write_particles(relocated, read_particles(work / f"pre_{s}" / "particles.star"))
    tables.append(read_particles(relocated))
merged = replace(tables[0], particles=pd.concat([t.particles for t in tables], ignore_index=True))
write_particles(work / "set1.star", select(merged, range(n_set1)))
write_particles(work / "test.star", select(merged, range(n_set1, n_set1 + n_test)))
print(f"set1.star: {n_set1} images, test.star: {n_test} images")
EOF

# 3. Train (labels: ground truth of set 1, or a Stage-1 STAR).
[ "$LABELS" = truth ] && LABELS="$WORK/set1.star"
stamp "training ($EPOCHS epochs, batch $BATCH, $NGPU GPU)"
TRAIN=(train --labels "$LABELS" --particles "$WORK/set1.star" --modes "$WORK/sim_0/modes.npz"
       -o "$WORK/run" --epochs "$EPOCHS" --batch-size "$BATCH" --device cuda --quiet)
if [ "$NGPU" -gt 1 ]; then
  "$PYTHON" -m torch.distributed.run --nproc_per_node "$NGPU" -m deephemnma "${TRAIN[@]}"
else
  $DH "${TRAIN[@]}"
fi

# 4. Predict the small and the large test sets; 5. evaluate against the ground truth.
stamp "predicting"
$DH predict --particles "$WORK/run/splits/test.star" --checkpoint "$WORK/run" \
  -o "$WORK/pred_small.star" --device cuda --batch-size 1024 --quiet
$DH predict --particles "$WORK/test.star" --checkpoint "$WORK/run" \
  -o "$WORK/pred_large.star" --device cuda --batch-size 1024
stamp "evaluating"
$DH evaluate "$WORK/pred_small.star" --truth "$WORK/set1.star" --modes "$WORK/sim_0/modes.npz" \
  -o "$WORK/eval_small" --paper table1
$DH evaluate "$WORK/pred_large.star" --truth "$WORK/test.star" --modes "$WORK/sim_0/modes.npz" \
  -o "$WORK/eval_large" --paper table3
stamp "done; training curves: $WORK/run/curves.png, figures: $WORK/eval_large/*.png"
