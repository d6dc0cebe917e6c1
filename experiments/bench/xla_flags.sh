#!/usr/bin/env bash
# XLA CPU flags vs the fcn train step: each flag set in its own process (flags are read
# once per process), alternated A B C .. A B C so that load drifts hit all alike.
#   bash experiments/bench/xla_flags.sh [MODEL] [ROUNDS]
set -u
MODEL=${1:-fcn}; ROUNDS=${2:-2}
FLAGS=("" "--xla_cpu_use_onednn=true" "--xla_cpu_use_xnnpack=true" "--xla_cpu_prefer_vector_width=512")
cd "$(dirname "$0")/../.."
for r in $(seq "$ROUNDS"); do
  for f in "${FLAGS[@]}"; do
    s=$(XLA_FLAGS="$f" .venv/bin/jaxseg bench --what train --model "$MODEL" --batch-size 8 \
        --image-size 256 --steps 3 --json 2>/dev/null | tail -1 |
        .venv/bin/python -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['step_seconds']:.4f} load {d['load_avg'][0]:.1f}\")")
    echo "round $r | ${f:-default} | $s"
  done
done
