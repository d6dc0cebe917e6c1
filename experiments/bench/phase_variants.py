"""Strided layers of the lab FCN / U-Net, fwd+bwd: conv impls lax / auto / im2col; transposed convs lax / col2im / phase / auto.

    .venv/bin/python experiments/bench/phase_variants.py --batch-size 8 --rounds 5

Times forward+backward (random cotangent through jax.vjp, so XLA cannot
simplify the backward away) of each strided layer, every variant in turn in
each round, and prints medians and the ratio to lax. conv0 needs only dw (its
input is the data), like in the training step. Each variant is an impl name
passed to `ops.conv` / `ops.conv_transpose`: "lax" is plain XLA (its conv and
its autodiff), "auto" the models' route (`jaxseg.ops.auto`: GEMM weight
gradients and stride-phase input gradients for strided convs, the stride-phase
form for transposed convs, on the CPU), "phase" the stride-phase transposed
conv on XLA's stride-1 conv. The auto route of each layer is printed with it.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops
from jaxseg.ops._common import conv_geometry, conv_transpose_geometry


def layers(b, s):
  # name, kind, input shape, kernel shape, stride, wrt
  return [
      ("fcn conv0 1->100 5x5/2", "conv", (b, s, s, 1), (5, 5, 1, 100), 2, (1,)),
      ("fcn conv1 100->200 5x5/2", "conv", (b, s // 4, s // 4, 100), (5, 5, 100, 200), 2, (0, 1)),
      ("fcn upscore 2->2 31x31/16", "convT", (b, s // 16, s // 16, 2), (31, 31, 2, 2), 16, (0, 1)),
      ("unet up 32->16 2x2/2", "convT", (b, s // 2, s // 2, 32), (2, 2, 16, 32), 2, (0, 1)),
  ]


CONV_VARIANTS = ("lax", "auto", "im2col")
TRANSPOSE_VARIANTS = ("lax", "col2im", "phase", "auto")


def variants(kind):
  """name -> f(x, w, geo) for each impl of the layer's kind (the first, lax, is the reference)."""
  if kind == "conv":
    return {impl: functools.partial(_conv, impl=impl) for impl in CONV_VARIANTS}
  return {impl: functools.partial(_conv_transpose, impl=impl) for impl in TRANSPOSE_VARIANTS}


def _conv(x, w, geo, *, impl):
  return ops.conv(x, w, stride=geo.stride, padding=list(geo.pads), impl=impl)


def _conv_transpose(y, w, geo, *, impl):
  return ops.conv_transpose(y, w, stride=geo.stride, padding="SAME", impl=impl)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--only", default="")
  a = p.parse_args()
  rng = np.random.default_rng(0)
  for name, kind, xs, ws, st, wrt in layers(a.batch_size, a.image_size):
    if a.only and a.only not in name:
      continue
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws) * 0.05, jnp.float32)
    if kind == "conv":
      geo = conv_geometry(xs, ws, stride=st, padding="SAME", dilation=1, groups=1)
    else:
      geo = conv_transpose_geometry(xs, ws, stride=st, padding="SAME", output_padding=None, dilation=1)
    fns = {}
    for vname, f in variants(kind).items():
      def fb(x, w, g, f=f):
        out, vjp = jax.vjp(lambda *args: f(*[args[wrt.index(i)] if i in wrt else (x, w)[i] for i in range(2)], geo),
                           *[(x, w)[i] for i in wrt])
        return out, vjp(g)
      out_shape = jax.eval_shape(lambda x, w: f(x, w, geo), x, w).shape
      g = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
      fwd = jax.jit(lambda x, w, f=f: f(x, w, geo))
      both = jax.jit(fb)
      jax.block_until_ready(fwd(x, w)); jax.block_until_ready(both(x, w, g))
      fns[vname] = (fwd, both, g)
    ref = fns["lax"][1](x, w, fns["lax"][2])
    times = {v: ([], []) for v in fns}
    for _ in range(a.rounds):
      for v, (fwd, both, g) in fns.items():
        t0 = time.perf_counter(); jax.block_until_ready(fwd(x, w)); t1 = time.perf_counter()
        r = both(x, w, g); jax.block_until_ready(r); t2 = time.perf_counter()
        times[v][0].append(t1 - t0); times[v][1].append(t2 - t1)
    lax_fb = statistics.median(times["lax"][1])
    route_of = ops.conv_route if kind == "conv" else ops.conv_transpose_route
    print(f"\n{name}, input {xs}, batch {a.batch_size}, auto route {route_of(xs, ws, stride=st, padding='SAME')}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| variant | fwd ms | fwd+bwd ms | vs lax f+b | max rel err of grads vs lax |")
    print("|---|---|---|---|---|")
    for v, (fwd, both, g) in fns.items():
      out = both(x, w, fns["lax"][2]) if fns[v][2].shape == fns["lax"][2].shape else None
      err = max(float(jnp.abs(p - q).max() / jnp.abs(p).max()) for p, q in zip(jax.tree.leaves(ref), jax.tree.leaves(out))) if out is not None else float("nan")
      print(f"| {v} | {1e3 * statistics.median(times[v][0]):.1f} | {1e3 * statistics.median(times[v][1]):.1f} | "
            f"{statistics.median(times[v][1]) / lax_fb:.2f}x | {err:.1e} |")


if __name__ == "__main__":
  main()
