"""One 3-D layer's three kernel calls (forward, input gradient, weight gradient) on the C++ direct
kernels: each call jitted alone, and the three in one jitted function as XLA schedules them or in a
fixed order (optimization barriers), in turn in one process. Says whether the layer's time is its
kernels' time or something around them (scheduling, two calls at once).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
    .venv/bin/python experiments/bench/micro/mb_layer_calls.py 8,16,16,32,64 [--samples 60]

Median (and 10th / 90th percentile) ms of --samples calls each, 2 ms apart; GFLOP/s count the
direct sum's multiply-adds (batch 2, 3x3x3 SAME).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from jax import lax

from jaxseg.ops._common import conv_geometry
from jaxseg.ops.cpu import direct


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("layer", help="D,H,W,C_in,C_out")
  p.add_argument("--samples", type=int, default=60)
  args = p.parse_args(argv)
  d, h, w_, ci, co = (int(v) for v in args.layer.split(","))
  r = np.random.default_rng(0)
  x, g = (jax.device_put(r.standard_normal((2, d, h, w_, c)).astype(np.float32)) for c in (ci, co))
  w = jax.device_put((r.standard_normal((3, 3, 3, ci, co)) / np.sqrt(27 * ci)).astype(np.float32))
  geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)

  def in_order(x, w, g):
    y = direct.forward(x, w, geo)
    g2, _ = lax.optimization_barrier((g, y))
    dx = direct.input_grad(g2, w, geo)
    x2, _ = lax.optimization_barrier((x, dx))
    return y, dx, direct.weight_grad(x2, g, geo)

  forms = {
      "forward": (jax.jit(lambda x, w, g: direct.forward(x, w, geo)), 1),
      "input grad": (jax.jit(lambda x, w, g: direct.input_grad(g, w, geo)), 1),
      "weight grad": (jax.jit(lambda x, w, g: direct.weight_grad(x, g, geo)), 1),
      "all three, XLA's schedule": (jax.jit(lambda x, w, g: (direct.forward(x, w, geo), direct.input_grad(g, w, geo),
                                                               direct.weight_grad(x, g, geo))), 3),
      "all three in order": (jax.jit(in_order), 3),
  }
  flop = 2 * 2 * d * h * w_ * 27 * ci * co
  for fn, _ in forms.values():
    jax.block_until_ready(fn(x, w, g))
  times = {k: [] for k in forms}
  for _ in range(args.samples):
    for k, (fn, _) in forms.items():
      time.sleep(0.002)
      t0 = time.perf_counter()
      jax.block_until_ready(fn(x, w, g))
      times[k].append(time.perf_counter() - t0)
  print(f"{args.layer}, batch 2, {args.samples} samples")
  for k, v in times.items():
    med = statistics.median(v)
    print(f"  {k}: {med * 1e3:.3f} ms (p10 {np.percentile(v, 10) * 1e3:.3f}, p90 {np.percentile(v, 90) * 1e3:.3f}), "
          f"{forms[k][1] * flop / med / 1e9:.0f} GFLOP/s")
  parts = sum(statistics.median(times[k]) for k in ("forward", "input grad", "weight grad"))
  print(f"  sum of the three alone: {parts * 1e3:.3f} ms")


if __name__ == "__main__":
  main()
