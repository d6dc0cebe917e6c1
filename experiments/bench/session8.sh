#!/usr/bin/env bash
# Session 8 (issue 19): the C++ kernels with explicit pads, row-crossing strips, dW cut by rows or
# kernel entries, and helper threads of their own. Before = d2e4575 (the last commit before them),
# checked out at $BEFORE (git worktree add /work/wt_before8 d2e4575); after = this tree.
# Each run starts in its own tree (python -m puts the working directory first on sys.path).
# Runs alternate before/after so that both see the same machine state.
# Parts: PARTBA=0 / PART3D=0 skip one.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
BEFORE=${BEFORE:-/work/wt_before8}
OUT=experiments/bench/out
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
export XLA_FLAGS=${XLA_FLAGS:---xla_cpu_experimental_ynn_fusion_type=-individual_convolution}
train() {  # $1 = label, $2 = tree, $3 = model, $4 = steps, $5 = batch, $6 = image size (- : the model's default)
  echo "== $1 $3 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  local size=(); [ "$6" != - ] && size=(--image-size "$6")
  (cd "$2" && PYTHONPATH=$2 $ROOT/$PY -m jaxseg bench --what train --model "$3" --batch-size "$5" \
    "${size[@]}" --steps "$4" --rounds 1 --json | tail -1)
}
# The 2-D models' step (must not get slower) and the 3-D step, before and after in turn.
if [ "${PARTBA:-1}" = 1 ]; then {
  for r in 1 2 3; do
    train before "$BEFORE" fcn 5 8 256; train after "$PWD" fcn 5 8 256
    train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256
    train before "$BEFORE" unet3d_small 5 2 -; train after "$PWD" unet3d_small 5 2 -
  done
} 2>&1 | tee $OUT/s8_before_after.txt; fi

# 3-D against PyTorch: the whole unet3d_small step, and the issue-19 layers through ops.conv(impl="auto").
if [ "${PART3D:-1}" = 1 ]; then
  $PY -m jaxseg bench --what train --model unet3d_small --peers --rounds 6 --steps 3 --json \
    2>&1 | tee $OUT/peers_unet3d_small_s8.txt
  $PY experiments/bench/micro/mb_conv3d.py --rounds 9 --forms auto 2>&1 | tee $OUT/mb_conv3d_s8.txt
  $PY experiments/bench/micro/mb_conv3d.py --rounds 9 --forms auto --calls 3 2>&1 | tee $OUT/mb_conv3d_calls3_s8.txt
  (cd experiments/bench/micro && PYTHONPATH=$ROOT $ROOT/$PY mb_call_times.py --layers 4,7 --calls 40) \
    2>&1 | tee $OUT/mb_call_times_s8.txt
  $PY -m jaxseg bench --what conv --model unet3d_small --impls auto --peers 2>&1 | tee $OUT/conv_unet3d_small_s8.txt
fi
