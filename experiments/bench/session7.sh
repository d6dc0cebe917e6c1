#!/usr/bin/env bash
# Session 7: the conv-dispatch refactor (issue 15) costs no speed, and the 3-D figures (issues 18, 19).
# Before = a50cf54 (the last commit before the refactor) checked out at $BEFORE
# (git worktree add /work/wt_before a50cf54); after = this tree.
# Each run starts in its own tree (python -m puts the working directory first on sys.path).
# Runs alternate before/after so that both see the same machine state.
# Parts: PARTBA=0 / PART3D=0 / PARTVARIANTS=0 / PARTPEERS=0 skip one.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
BEFORE=${BEFORE:-/work/wt_before}
OUT=experiments/bench/out
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
train() {  # $1 = label, $2 = tree, $3 = model, $4 = steps
  echo "== $1 $3 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$2" && PYTHONPATH=$2 $ROOT/$PY -m jaxseg bench --what train --model "$3" --batch-size 8 --image-size 256 \
    --steps "$4" --rounds 1 --json | tail -1)
}
if [ "${PARTBA:-1}" = 1 ]; then {
  for r in 1 2 3; do
    for m in fcn unet_small; do
      s=5; [ $m = unet_small ] && s=3
      train before "$BEFORE" $m $s
      train after "$PWD" $m $s
    done
  done
} 2>&1 | tee $OUT/s7_before_after.txt; fi

# 3-D (issues 18, 19): the whole unet3d_small step beside PyTorch, the issue-19 layers, the model's layers.
if [ "${PART3D:-1}" = 1 ]; then
  export XLA_FLAGS=${XLA_FLAGS:---xla_cpu_experimental_ynn_fusion_type=-individual_convolution}
  $PY -m jaxseg bench --what train --model unet3d_small --peers --rounds 4 --steps 3 --json \
    2>&1 | tee $OUT/peers_unet3d_small_s7.txt
  $PY experiments/bench/micro/mb_conv3d.py --rounds 5 --forms lax,auto 2>&1 | tee $OUT/mb_conv3d_s7.txt
  $PY -m jaxseg bench --what conv --model unet3d_small --impls lax,auto --peers 2>&1 \
    | tee $OUT/conv_unet3d_small_s7.txt
fi

# The routes against plain XLA and against the routes without the C++ kernels, in turn in one process.
if [ "${PARTVARIANTS:-1}" = 1 ]; then
  for m in fcn unet_small; do
    $PY experiments/bench/step_variants.py --model $m --batch-size 8 --image-size 256 --steps 3 --rounds 3 \
      --variants base,no_winograd,no_cpu_kernels,lax 2>&1 | tee $OUT/step_variants_${m}_s7.txt
  done
fi

# The issue's own form: `--peers` before and after, one run each (PyTorch and Keras as the yardstick).
if [ "${PARTPEERS:-1}" = 1 ]; then
  for m in fcn unet_small; do
    for side in before after; do
      tree=$ROOT; [ $side = before ] && tree=$BEFORE
      echo "== $side $m $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
      (cd "$tree" && PYTHONPATH=$tree $ROOT/$PY -m jaxseg bench --what train --model $m --batch-size 8 \
        --image-size 256 --steps 3 --rounds 3 --peers)
    done
  done 2>&1 | tee $OUT/s7_peers_before_after.txt
fi
