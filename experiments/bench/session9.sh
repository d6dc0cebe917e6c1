#!/usr/bin/env bash
# Session 9 (issue 19): the input gradient flips its kernel in C++, the weight gradient's pixel loop
# keeps its accumulators in registers, forward parts split by 64-channel blocks, and the route
# winograd3d (F(2x2, 3x3) in-plane, depth direct) for the deepest layers. Before = 3c5c5c5
# (session 8's last commit), checked out at $BEFORE (git worktree add /work/wt_before9 3c5c5c5);
# after = this tree. Each run starts in its own tree (python -m puts the working directory first on
# sys.path). Runs alternate before/after so that both see the same machine state.
# Parts: PART3D=0 / PARTBA=0 / PARTW=0 / PARTK=0 skip one.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
BEFORE=${BEFORE:-/work/wt_before9}
OUT=experiments/bench/out
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
export XLA_FLAGS=${XLA_FLAGS:---xla_cpu_experimental_ynn_fusion_type=-individual_convolution}
train() {  # $1 = label, $2 = tree, $3 = model, $4 = steps, $5 = batch, $6 = image size (- : the model's default)
  echo "== $1 $3 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  local size=(); [ "$6" != - ] && size=(--image-size "$6")
  (cd "$2" && PYTHONPATH=$2 $ROOT/$PY -m jaxseg bench --what train --model "$3" --batch-size "$5" \
    "${size[@]}" --steps "$4" --rounds 1 --json | tail -1)
}
layers() {  # $1 = label, $2 = tree, $3 = extra arguments of mb_conv3d.py
  echo "== $1 layers $3 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$2" && PYTHONPATH=$2 $ROOT/$PY experiments/bench/micro/mb_conv3d.py --forms auto $3 | tail -9)
}
# The issue-19 layers before and after in turn (one timed call a sample, and 5 back to back).
if [ "${PART3D:-1}" = 1 ]; then {
  for r in 1 2; do
    layers before "$BEFORE" "--rounds 9"; layers after "$PWD" "--rounds 9"
    layers before "$BEFORE" "--rounds 9 --calls 5"; layers after "$PWD" "--rounds 9 --calls 5"
  done
} 2>&1 | tee $OUT/mb_conv3d_before_after_s9.txt
  $PY -m jaxseg bench --what train --model unet3d_small --peers --rounds 6 --steps 3 --json \
    2>&1 | tee $OUT/peers_unet3d_small_s9.txt
  $PY -m jaxseg bench --what conv --model unet3d_small --impls auto --peers 2>&1 | tee $OUT/conv_unet3d_small_s9.txt
fi
# The 2-D models' step (must not get slower) and the 3-D step, before and after in turn.
if [ "${PARTBA:-1}" = 1 ]; then {
  for r in 1 2 3; do
    train before "$BEFORE" fcn 5 8 256; train after "$PWD" fcn 5 8 256
    train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256
    train before "$BEFORE" unet3d_small 5 2 -; train after "$PWD" unet3d_small 5 2 -
  done
} 2>&1 | tee $OUT/s9_before_after.txt; fi
# The F(4x4, 3x3) prototype against the direct route (not taken), and winograd3d (auto) against the
# direct kernels on the issue-19 layers and a few more deep shapes, in turn in one process.
if [ "${PARTW:-1}" = 1 ]; then
  $PY experiments/bench/micro/mb_wino3d.py --rounds 9 2>&1 | tee $OUT/mb_wino3d_s9.txt
  $PY experiments/bench/micro/mb_conv3d.py --forms auto,direct --layers 4,5,6,7 --rounds 11 --calls 5 \
    2>&1 | tee $OUT/mb_conv3d_auto_direct_s9.txt
fi
# The kernels' pieces: the input gradient's flip in XLA or in the kernel; one thread's kernel times
# outside XLA and the core's FMA peak.
if [ "${PARTK:-1}" = 1 ]; then
  (cd experiments/bench/micro && PYTHONPATH=$ROOT $ROOT/$PY mb_dx_flip.py --rounds 25) 2>&1 | tee $OUT/mb_dx_flip_s9.txt
  g++ -O3 -march=native -std=c++17 -pthread -I"$($PY -c 'import jax; print(jax.ffi.include_dir())')" \
    experiments/bench/micro/cc/kernel_times.cc -o /tmp/kernel_times_s9
  { taskset -c 0 /tmp/kernel_times_s9 128 128 4 8; taskset -c 0 /tmp/kernel_times_s9 64 128 4 8; } \
    2>&1 | tee $OUT/kernel_times_s9.txt
fi
