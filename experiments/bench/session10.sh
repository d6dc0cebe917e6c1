#!/usr/bin/env bash
# Session 10 (issue 19): layers with at most 16 output channels take the forward (and the input
# gradient) in sliding strips and the weight gradient with input channels in lanes. Before = 3b18ec3
# (session 9's last commit), checked out at $BEFORE (git worktree add /work/wt_before10 3b18ec3);
# after = this tree. Each run starts in its own tree (python -m puts the working directory first on
# sys.path). Runs alternate before/after so that both see the same machine state.
# Also: the instance norm's closed-form gradient, and the up-convs on a C++ kernel (route cpu_direct).
# Parts: PARTK=0 / PARTIN=0 / PARTUP=0 / PARTSV=0 / PART3D=0 / PARTSTEP=0 / PARTBA=0 skip one.
# Off unless set to 1: PARTINAB, the instance-norm A/B (it ran at 69b10da: after = that tree, before =
# 275cc82 at $MID, git worktree add /work/wt_mid10 275cc82); PARTBA2, four more unet_small pairs; PARTC,
# one layer's kernel calls alone and together; PARTF, the issue-19 layers at the final tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
BEFORE=${BEFORE:-/work/wt_before10}
MID=${MID:-/work/wt_mid10}
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
# One thread, outside XLA: the narrow forms against the general ones, in turn in one process.
if [ "${PARTK:-1}" = 1 ]; then
  g++ -O3 -march=native -std=c++17 -pthread -I"$($PY -c 'import jax; print(jax.ffi.include_dir())')" \
    experiments/bench/micro/cc/narrow_forms.cc -o /tmp/narrow_forms_s10
  for a in "16 16 32 64" "32 16 16 32" "16 16 16 32"; do taskset -c 0 /tmp/narrow_forms_s10 $a; done \
    2>&1 | tee $OUT/narrow_forms_s10.txt
fi
# The instance norm + leaky ReLU: JAX's derivative against the closed form, in turn in one process.
if [ "${PARTIN:-1}" = 1 ]; then
  $PY experiments/bench/micro/mb_instance_norm.py 2>&1 | tee $OUT/mb_instance_norm_s10.txt
fi
# The unet3d_small step with the closed form (after) and JAX's derivative (before, 275cc82), in turn.
if [ "${PARTINAB:-0}" = 1 ]; then {
  for r in 1 2 3; do train before "$MID" unet3d_small 5 2 -; train after "$PWD" unet3d_small 5 2 -; done
} 2>&1 | tee $OUT/s10_instance_norm_ab.txt; fi
# The up-convs: cpu_direct against phase_rows and PyTorch, in turn in one process.
if [ "${PARTUP:-1}" = 1 ]; then
  { $PY experiments/bench/micro/mb_upconv.py --rounds 9; $PY experiments/bench/micro/mb_upconv.py --rounds 9 --calls 5; } \
    2>&1 | tee $OUT/mb_upconv_s10.txt
fi
# The whole step with the up-convs on the C++ kernel (base) and as XLA GEMM rows, in turn in one process.
if [ "${PARTSV:-1}" = 1 ]; then {
  $PY experiments/bench/step_variants.py --model unet3d_small --batch-size 2 --patch-size 32,64,64 --steps 3 --rounds 5 \
    --variants base,upconv_rows
  $PY experiments/bench/step_variants.py --model unet_small --batch-size 8 --image-size 256 --steps 3 \
    --rounds 5 --variants base,upconv_rows
} 2>&1 | tee $OUT/step_variants_upconv_s10.txt; fi
# The issue-19 layers before and after in turn (one timed call a sample, and 5 back to back).
if [ "${PART3D:-1}" = 1 ]; then {
  for r in 1 2; do
    layers before "$BEFORE" "--rounds 9"; layers after "$PWD" "--rounds 9"
    layers before "$BEFORE" "--rounds 9 --calls 5"; layers after "$PWD" "--rounds 9 --calls 5"
  done
} 2>&1 | tee $OUT/mb_conv3d_before_after_s10.txt; fi
# The 3-D step and its layers against PyTorch.
if [ "${PARTSTEP:-1}" = 1 ]; then
  $PY -m jaxseg bench --what train --model unet3d_small --peers --rounds 6 --steps 3 --json \
    2>&1 | tee $OUT/peers_unet3d_small_s10.txt
  $PY -m jaxseg bench --what conv --model unet3d_small --impls auto --peers 2>&1 | tee $OUT/conv_unet3d_small_s10.txt
fi
# The 2-D models' step (must not get slower) and the 3-D step, before and after in turn.
if [ "${PARTBA:-1}" = 1 ]; then {
  for r in 1 2 3; do
    train before "$BEFORE" fcn 5 8 256; train after "$PWD" fcn 5 8 256
    train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256
    train before "$BEFORE" unet3d_small 5 2 -; train after "$PWD" unet3d_small 5 2 -
  done
} 2>&1 | tee $OUT/s10_before_after.txt; fi
# Four more unet_small pairs (PARTBA's unet_small pairs were 1.10, 0.91, 1.03).
if [ "${PARTBA2:-0}" = 1 ]; then {
  for r in 1 2 3 4; do train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256; done
} 2>&1 | tee $OUT/s10_before_after_unet_small.txt; fi
# One layer's kernel calls alone and together (is the layer's time its kernels' time?).
if [ "${PARTC:-0}" = 1 ]; then {
  for L in 8,16,16,32,64 8,16,16,64,64 32,64,64,16,16; do $PY experiments/bench/micro/mb_layer_calls.py $L; done
} 2>&1 | tee $OUT/mb_layer_calls_s10.txt; fi
# The issue-19 layers at the final tree, 21 rounds of the mean of 5 calls.
if [ "${PARTF:-0}" = 1 ]; then
  $PY experiments/bench/micro/mb_conv3d.py --rounds 21 --calls 5 --forms auto 2>&1 | tee $OUT/mb_conv3d_calls5_s10_final.txt
fi
