#!/usr/bin/env bash
# Session 11 (issue 19): 3-D Winograd F(2x2, 3x3) in-plane with the depth taps as a (3, 1, 1) conv per
# tile position on the direct kernels, each transformed plane stored once. Two forms: composed of
# separate transforms and products over the whole batch (route winograd3d_products, <= 512 output
# voxels), and fused band by band of tile rows in one call (route winograd3d, every other 3x3x3/1
# layer with >= 16 channels). Before = 2183fa0 (session 10's last commit), checked out at $BEFORE
# (git worktree add /work/wt_before11 2183fa0); after = this tree. Each run starts in its own tree
# (python -m puts the working directory first on sys.path). Runs alternate before/after so that both
# see the same machine state.
# Parts: PARTK=0 / PARTW=0 / PART3D=0 / PARTSV=0 / PARTSTEP=0 / PARTBA=0 / PARTBA2=0 / PARTBA3=0 / PARTF=0 / PARTBA4=0 skip one.
# The first run (at e1c93c0, one form, the route up to 8192 voxels) wrote the same files with the
# suffix _s11a.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
BEFORE=${BEFORE:-/work/wt_before11}
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
# One thread, outside XLA: the depth products against the direct forward and weight gradient.
if [ "${PARTK:-1}" = 1 ]; then
  g++ -O3 -march=native -std=c++17 -pthread -I"$($PY -c 'import jax; print(jax.ffi.include_dir())')" \
    experiments/bench/micro/cc/wino3_product.cc -o /tmp/wino3_product_s11 2>/dev/null
  for a in "64 64 8 16" "32 64 8 16" "32 32 16 32" "64 128 4 8" "128 128 4 8"; do taskset -c 0 /tmp/wino3_product_s11 $a 10; done \
    2>&1 | tee $OUT/wino3_product_s11.txt
fi
# The rule: direct against both Winograd forms on every layer of the issue with 16 or more input
# channels, at batch 2 and 4.
if [ "${PARTW:-1}" = 1 ]; then {
  for b in 2 4; do
    $PY experiments/bench/micro/mb_conv3d.py --forms direct,winograd3d,winograd3d_composed --layers 1,2,3,4,5,6,7 \
      --rounds 9 --calls 3 --batch $b
  done
} 2>&1 | tee $OUT/mb_conv3d_direct_wino3d_s11.txt; fi
# The issue-19 layers before and after in turn (one timed call a sample, and 5 back to back).
if [ "${PART3D:-1}" = 1 ]; then {
  for r in 1 2; do
    layers before "$BEFORE" "--rounds 9"; layers after "$PWD" "--rounds 9"
    layers before "$BEFORE" "--rounds 9 --calls 5"; layers after "$PWD" "--rounds 9 --calls 5"
  done
} 2>&1 | tee $OUT/mb_conv3d_before_after_s11.txt; fi
# The whole 3-D step with the new rule (base), the products form up to 4096 voxels, and no 3-D Winograd
# (the direct kernels), in turn.
if [ "${PARTSV:-1}" = 1 ]; then
  $PY experiments/bench/step_variants.py --model unet3d_small --batch-size 2 --patch-size 32,64,64 --steps 3 --rounds 5 \
    --variants base,winograd3d_products_4096,no_winograd3d 2>&1 | tee $OUT/step_variants_wino3d_s11.txt
fi
# The 3-D step and its layers against PyTorch.
if [ "${PARTSTEP:-1}" = 1 ]; then
  $PY -m jaxseg bench --what train --model unet3d_small --peers --rounds 6 --steps 3 --json \
    2>&1 | tee $OUT/peers_unet3d_small_s11.txt
  $PY -m jaxseg bench --what conv --model unet3d_small --impls auto --peers 2>&1 | tee $OUT/conv_unet3d_small_s11.txt
fi
# The 2-D models' step (must not get slower) and the 3-D step, before and after in turn.
if [ "${PARTBA:-1}" = 1 ]; then {
  for r in 1 2 3; do
    train before "$BEFORE" fcn 5 8 256; train after "$PWD" fcn 5 8 256
    train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256
    train before "$BEFORE" unet3d_small 5 2 -; train after "$PWD" unet3d_small 5 2 -
  done
} 2>&1 | tee $OUT/s11_before_after.txt; fi
# Four more fcn pairs (PARTBA's were 1.09, 1.12, 1.18 in a slow phase of the machine).
if [ "${PARTBA3:-1}" = 1 ]; then {
  for r in 1 2 3 4; do train before "$BEFORE" fcn 5 8 256; train after "$PWD" fcn 5 8 256; done
} 2>&1 | tee $OUT/s11_before_after_fcn.txt; fi
# The issue-19 layers at the final tree, 21 rounds of the mean of 5 calls.
if [ "${PARTF:-1}" = 1 ]; then
  $PY experiments/bench/micro/mb_conv3d.py --rounds 21 --calls 5 --forms auto 2>&1 | tee $OUT/mb_conv3d_calls5_s11_final.txt
fi
# Six more unet_small pairs at the final tree (PARTBA's and PARTBA2's medians were 1.02).
if [ "${PARTBA4:-1}" = 1 ]; then {
  for r in 1 2 3 4 5 6; do train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256; done
} 2>&1 | tee $OUT/s11_before_after_unet_small_final.txt; fi
# Four more unet_small pairs (the 2-D step must not get slower; its pairs swing by 10-20%).
if [ "${PARTBA2:-1}" = 1 ]; then {
  for r in 1 2 3 4; do train before "$BEFORE" unet_small 3 8 256; train after "$PWD" unet_small 3 8 256; done
} 2>&1 | tee $OUT/s11_before_after_unet_small.txt; fi
