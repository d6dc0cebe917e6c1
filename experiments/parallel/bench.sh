#!/usr/bin/env bash
# What the data-parallel layouts cost on this machine relative to one device
# (experiments/RESULTS.md, "Data parallelism"). CPU devices are faked with
# --xla_force_host_platform_device_count; one device and each layout run in
# interleaved rounds in one process. Tables on stdout, JSON (last line of each)
# in experiments/parallel/out/. About 15 minutes on 2 cores.
#   bash experiments/parallel/bench.sh
set -eu
cd "$(dirname "$0")/../.."
J=${JAXSEG:-.venv/bin/jaxseg}
OUT=experiments/parallel/out; mkdir -p "$OUT"
B="bench --what train --batch-size 8 --image-size 256 --steps 3 --rounds 3 --json"
uptime
for n in 4 2; do
  XLA_FLAGS=--xla_force_host_platform_device_count=$n $J $B --model unet_small --devices $n | tee "$OUT/bench_unet_small_$n.txt"
done
# plain XLA convolutions (conv impl lax: no C++ custom calls)
XLA_FLAGS=--xla_force_host_platform_device_count=4 $J $B --model unet_small --devices 4 --impls lax \
    | tee "$OUT/bench_unet_small_4_lax.txt"
XLA_FLAGS=--xla_force_host_platform_device_count=4 $J $B --model fcn --devices 4 | tee "$OUT/bench_fcn_4.txt"
uptime
