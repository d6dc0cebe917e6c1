"""The input gradient of the issue-19 layers: kernel flipped by XLA before the forward kernel, or by
the input-gradient kernel itself (`direct.flipped_forward`), in turn in one process.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python experiments/bench/micro/mb_dx_flip.py [--layers 4,5,6,7] [--rounds 25]

A sample is the mean of 5 calls after an untimed one; the median of the
samples is printed. Both forms must give the same bits (same kernel, same order
of sums).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mb_conv3d import LAYERS


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--layers", default="4,5,6,7", help="indices into LAYERS, comma-separated")
  p.add_argument("--rounds", type=int, default=25)
  args = p.parse_args(argv)
  from jaxseg.ops._common import conv_geometry
  from jaxseg.ops.cpu import direct
  print("| D,H,W,Cin,Cout | XLA flip + forward ms | flipped_forward ms | ratio |")
  for i in map(int, args.layers.split(",")):
    d, h, w_, ci, co = LAYERS[i]
    r = np.random.default_rng(0)
    w = (r.standard_normal((3, 3, 3, ci, co)) / np.sqrt(27 * ci)).astype(np.float32)
    g = r.standard_normal((2, d, h, w_, co)).astype(np.float32)
    geo = conv_geometry((2, d, h, w_, ci), w.shape, stride=1, padding="SAME", dilation=1, groups=1)
    dgeo = geo._replace(cin=geo.cout, cout=geo.cin)   # SAME 3x3x3: the mirrored pads are the same
    wj, gj = jax.device_put((w, g))
    fns = {"xla": jax.jit(lambda g, w: direct.forward(g, jnp.swapaxes(jnp.flip(w, axis=(0, 1, 2)), -2, -1), dgeo)),
           "kernel": jax.jit(lambda g, w: direct.flipped_forward(g, w, dgeo))}
    a, b = (np.asarray(f(gj, wj)) for f in fns.values())
    if not np.array_equal(a, b):
      raise SystemExit(f"layer {LAYERS[i]}: the two forms differ by {np.abs(a - b).max():.2e}")
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
      for k, f in fns.items():
        jax.block_until_ready(f(gj, wj))
        t0 = time.perf_counter()
        for _ in range(5):
          jax.block_until_ready(f(gj, wj))
        times[k].append((time.perf_counter() - t0) / 5 * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| {d},{h},{w_},{ci},{co} | {med['xla']:.3f} | {med['kernel']:.3f} | {med['kernel'] / med['xla']:.3f} |",
          flush=True)


if __name__ == "__main__":
  main()
