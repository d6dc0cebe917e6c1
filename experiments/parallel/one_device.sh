#!/usr/bin/env bash
# Issue 16's "done when": unet_small with --loss dice and ce+dice on 4 (faked CPU)
# devices under pmap, shard_map and jit ends with the one-device val_loss.
# Prints one line per run and writes the JSON lines to experiments/parallel/out/one_device.jsonl.
#   bash experiments/parallel/one_device.sh            (about 10 minutes on 2 cores)
set -eu
cd "$(dirname "$0")/../.."
J=${JAXSEG:-.venv/bin/jaxseg}; PY=${PYTHON:-.venv/bin/python}
OUT=experiments/parallel/out; mkdir -p "$OUT"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=4"
: > "$OUT/one_device.jsonl"
uptime
for loss in dice ce+dice; do
  for run in "1 pmap" "4 pmap" "4 shard_map" "4 jit"; do
    set -- $run
    r=$($J train --model unet_small --loss "$loss" --data synthetic:16,8,64 --epochs 2 --batch-size 8 \
        --devices "$1" --parallel "$2" --workdir "$TMP/$loss-$1-$2" --json --quiet | tail -1)
    echo "{\"loss\": \"$loss\", \"devices\": $1, \"parallel\": \"$2\", \"result\": $r}" >> "$OUT/one_device.jsonl"
    echo "$loss devices=$1 $2: $(echo "$r" | $PY -c 'import json,sys; r=json.load(sys.stdin); print(*(f"{k} {r[k]!r}" for k in ("val_loss", "val_dice", "train_loss")))')"
  done
done
$PY - "$OUT/one_device.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for loss in ("dice", "ce+dice"):
  one = next(r for r in rows if r["loss"] == loss and r["devices"] == 1)["result"]
  for r in rows:
    if r["loss"] == loss and r["devices"] > 1:
      rel = {k: abs(r["result"][k] - one[k]) / abs(one[k]) for k in ("val_loss", "val_dice", "train_loss")}
      print(f"{loss:8s} 4 x {r['parallel']:9s} vs 1 device, relative: " + ", ".join(f"{k} {v:.1e}" for k, v in rel.items()))
PY
uptime
