#!/usr/bin/env bash
# The commands behind experiments/bench/RESULTS.md. Needs the peers extra:
#   .venv/bin/pip install -e '.[peers,plot]'
# Each writes its table to stdout and its JSON (last line) to experiments/bench/out/.
set -eu
cd "$(dirname "$0")/../.."
OUT=experiments/bench/out; mkdir -p "$OUT"
J=.venv/bin/jaxseg
uptime
# 1. Train step vs PyTorch and Keras, interleaved (targets: fcn <= 1.0x torch, unet_small <= 0.8x).
$J bench --what train --model fcn --batch-size 8 --image-size 256 --steps 5 --rounds 3 --peers --json | tee "$OUT/peers_fcn.txt"
$J bench --what train --model unet_small --batch-size 8 --image-size 256 --steps 3 --rounds 3 --peers --json | tee "$OUT/peers_unet_small.txt"
$J bench --what train --model unet3d_small --peers --rounds 4 --steps 3 --json | tee "$OUT/peers_unet3d_small.txt"   # batch 2, 32x64x64
# 2. Every conv impl on every conv layer (targets: im2col <= 1.5x lax fwd+bwd, direct <= 3x on fcn).
$J bench --what conv --model fcn,unet_small --batch-size 8 --image-size 256 --steps 3 --budget 10 --json | tee "$OUT/conv.txt"
# 3. Sweeps with plots.
$J bench --what conv --model fcn --layer conv2 --sweep --batch-size 8 --image-size 256 --steps 3 \
    --impls lax,im2col,direct,matrix --plot experiments/bench/conv_sweep.png --json | tee "$OUT/conv_sweep.txt"
$J bench --what train --model fcn --sweep --batch-size 8 --image-size 256 --steps 3 \
    --plot experiments/bench/train_sweep.png --json | tee "$OUT/train_sweep.txt"
# 4. Before/after for the proposals (one process, variants in turn), and XLA flags. The variants are
#    ConvPolicy values (experiments/bench/step_variants.py's docstring lists them); variants of earlier
#    sessions that are no longer expressible are listed in experiments/bench/RESULTS.md.
.venv/bin/python experiments/bench/step_variants.py --model fcn --variants base,lax,plain_step,transpose_xla
.venv/bin/python experiments/bench/step_variants.py --model fcn --steps 5 --rounds 6 --variants base,strided_dx_xla
.venv/bin/python experiments/bench/step_variants.py --model unet_small --steps 3 --rounds 4 --variants base,upconv_d2s
# session 5: the C++ direct conv kernels (jaxseg.ops.cpu.direct) vs XLA's convs, layer by layer and in the step
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution .venv/bin/python experiments/bench/micro/mb_cpu_conv.py --steps 5
.venv/bin/python experiments/bench/step_variants.py --model unet_small --steps 3 --rounds 3 --variants base,no_cpu_direct,cpu_direct_upto_91_64,cpu_direct_upto_64_32
.venv/bin/python experiments/bench/step_variants.py --model unet_small --steps 3 --rounds 4 --variants base,no_cpu_direct,stride1_gemm_dw
.venv/bin/python experiments/bench/step_variants.py --model fcn --steps 5 --rounds 5 --variants base,no_cpu_direct,strided_dx_col2im,strided_dx_xla,stride1_gemm_dw
# session 6: Winograd F(4x4, 3x3) (jaxseg.ops.cpu.winograd) vs the path before it, layer by layer and in the step
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution .venv/bin/python experiments/bench/micro/mb_winograd.py --steps 7
.venv/bin/python experiments/bench/step_variants.py --model fcn --steps 5 --rounds 4 --variants base,no_winograd
.venv/bin/python experiments/bench/step_variants.py --model unet_small --steps 3 --rounds 4 --variants base,no_winograd,winograd_64_64,winograd_100_64,winograd_32_128
bash experiments/bench/xla_flags.sh fcn 2
# data parallelism: one device vs pmap, shard_map and jit on faked CPU devices
bash experiments/parallel/bench.sh
uptime
