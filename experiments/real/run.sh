#!/usr/bin/env bash
# The real-scan experiment of experiments/RESULTS.md ("Real scans"): the MNI152
# T1 template, gray matter, train slab z 35..94, val slab z 100..139.
#   bash experiments/real/run.sh [DATA_DIR] [RUNS_DIR] [SETTING...]
# Writes experiments/real/out/<setting>.json (train's --json line, plus wall
# seconds and `uptime`) and <setting>.metrics.jsonl; the data and the runs
# stay outside the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-/tmp/mni}; RUNS=${2:-/tmp/mni_runs}; shift 2 || true
JAXSEG=${JAXSEG:-.venv/bin/jaxseg}
PY=${PY:-.venv/bin/python}
OUT=experiments/real/out
mkdir -p "$OUT" "$RUNS"
[ -f "$DATA/threshold.json" ] || "$PY" experiments/real/make_mni.py --out "$DATA"
cp "$DATA/threshold.json" "$OUT/threshold.json"
BASE=(train --model unet_small --data "folder:$DATA/train" --val-data "folder:$DATA/val" --json --quiet --overwrite)
declare -A SETTINGS=(
  [defaults]=""                                                    # what `jaxseg train --model unet_small` does
  [defaults_rerun]=""                                              # the same, again, when the machine was quieter
  [defaults_e10]="--epochs 10"
  [no_augment]="--augment none"
  [light_augment]="--augment light"
  [zscore_slice_e10]="--epochs 10 --normalize zscore-slice"         # jaxseg's old per-slice z-score
  [zscore_volume_e10]="--epochs 10 --normalize zscore-volume"
  [no_augment_e10]="--epochs 10 --augment none"
  [light_augment_e10]="--epochs 10 --augment light"
  [heavy_augment_e10]="--epochs 10 --augment heavy"
  [constant_lr_e10]="--epochs 10 --schedule constant --warmup-steps 0"
  [poly_e10]="--epochs 10 --schedule poly"
  [old_defaults_e10]="--epochs 10 --normalize zscore-slice --augment none --schedule exponential --warmup-steps 0"
)
for name in "${@:-${!SETTINGS[@]}}"; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  $JAXSEG "${BASE[@]}" --workdir "$RUNS/$name" ${SETTINGS[$name]} | tail -n 1 > "$OUT/$name.tmp"
  wall=$(( $(date +%s) - start ))
  "$PY" - "$OUT/$name.tmp" "$OUT/$name.json" "$wall" "$(uptime)" "${SETTINGS[$name]}" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
r.update(wall_seconds=float(sys.argv[3]), uptime_after=sys.argv[4].strip(), flags=sys.argv[5])
json.dump(r, open(sys.argv[2], "w"), indent=1)
PY
  rm "$OUT/$name.tmp"
  cp "$RUNS/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl"
  echo "$name: val_dice $(grep -o '"val_dice": [0-9.]*' "$OUT/$name.json" | head -1)  wall ${wall}s"
done
