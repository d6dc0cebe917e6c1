"""im2col with a hand-written VJP vs jaxseg.ops' im2col vs lax, on the FCN's conv layers.

    .venv/bin/python experiments/bench/im2col_variants.py --batch-size 8 --image-size 256

jaxseg.ops' im2col stacks the tap slices into a patches matrix and lets JAX
differentiate that: the input gradient becomes one pad + add per kernel tap
(25 full-size arrays for a 5x5 kernel). The variant here keeps the forward
(patches @ W) and gives it a VJP made of the same two ideas:
  dW = patches^T @ g          (one GEMM; patches recomputed from x, not stored)
  dx = col2im(g @ W^T)        (one GEMM, then the overlap-add that
                               ops.conv_transpose(impl="col2im") already does)
Every variant is checked against lax (y, dx, dw) before it is timed.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp


def _same_pads(size, k, s):
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return out, (total // 2, total - total // 2)


def make_im2col_vjp(stride: int, kernel: tuple[int, int]):
  """conv(x, w) SAME, 2-D, im2col forward; VJP = GEMM for dW and col2im for dx."""
  from jaxseg import ops

  def patches(x):
    from jaxseg.ops._common import conv_geometry
    from jaxseg.ops.xla import tap_slices
    geo = conv_geometry(x.shape, kernel + (x.shape[-1], 1), stride=stride, padding="SAME",
                        dilation=1, groups=1)
    return jnp.stack(tap_slices(x, geo), axis=-2)      # (N, Ho, Wo, T, Cin)

  @jax.custom_vjp
  def f(x, w):
    p = patches(x)
    n, ho, wo, t, c = p.shape
    return (p.reshape(-1, t * c) @ w.reshape(t * c, -1)).reshape(n, ho, wo, -1)

  def fwd(x, w):
    return f(x, w), (x, w)

  def bwd(res, g):
    x, w = res
    p = patches(x)
    n, ho, wo, t, c = p.shape
    g2 = g.reshape(-1, g.shape[-1])
    dw = (p.reshape(-1, t * c).T @ g2).reshape(w.shape)
    pads, opad = [], []
    for size, k, o in zip(x.shape[1:3], kernel, g.shape[1:3]):
      _, (lo, hi) = _same_pads(size, k, stride)
      pads.append((lo, hi))
      opad.append(size - ((o - 1) * stride + k - lo - hi))
    dx = ops.conv_transpose(g, w, stride=stride, padding=pads, output_padding=tuple(opad),
                            impl="col2im")
    return dx, dw

  f.defvjp(fwd, bwd)
  return f


def make_lax_col2im_dx(stride: int, kernel: tuple[int, int], conv_op=None):
  """lax's conv forward and dW, but dx by col2im instead of XLA's stride-dilated conv.

  For stride s, XLA computes dx as a conv over g with s-1 zeros between its
  pixels (lhs dilation): (s*s - 1)/(s*s) of those multiplies are by zero.
  col2im does one GEMM and an overlap-add: no zeros.
  """
  from jaxseg import ops
  conv_op = conv_op or ops.conv

  def conv(x, w):
    return conv_op(x, w, stride=stride, padding="SAME", impl="lax")

  @jax.custom_vjp
  def f(x, w):
    return conv(x, w)

  def fwd(x, w):
    return conv(x, w), (x, w)

  def bwd(res, g):
    x, w = res
    _, vjp_w = jax.vjp(lambda w_: conv(x, w_), w)
    (dw,) = vjp_w(g)
    pads, opad = [], []
    for size, k, o in zip(x.shape[1:3], kernel, g.shape[1:3]):
      _, (lo, hi) = _same_pads(size, k, stride)
      pads.append((lo, hi))
      opad.append(size - ((o - 1) * stride + k - lo - hi))
    dx = ops.conv_transpose(g, w, stride=stride, padding=pads, output_padding=tuple(opad),
                            impl="col2im")
    return dx, dw

  f.defvjp(fwd, bwd)
  return f


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--layers", default=None, help="comma-separated layer names (default all)")
  args = p.parse_args(argv)
  import os
  from jaxseg import ops
  from jaxseg.bench import conv as conv_lib
  from jaxseg.bench.layers import table_layers
  from jaxseg.bench.timing import time_fn
  layers = [l for l in table_layers("fcn", batch=args.batch_size, image_size=args.image_size)
            if l.kind == "conv" and (not args.layers or l.name in args.layers.split(","))]
  print(f"fcn conv layers, batch {args.batch_size}, {args.image_size}^2, fwd+bwd ms "
        f"(random cotangent), load {os.getloadavg()[0]:.2f}")
  print("| layer | shape | lax | ops im2col | im2col + col2im VJP | lax + col2im dx "
        "| ops im2col / lax | new / lax | lax+col2im dx / lax |")
  print("|---|---|---|---|---|---|---|---|---|")
  tot = {"lax": 0.0, "ops": 0.0, "new": 0.0, "laxdx": 0.0}
  for layer in layers:
    x, w, ct = conv_lib.layer_inputs(layer)
    s = layer.stride[0]
    fns = {"lax": conv_lib.layer_fn(layer, "lax"), "ops": conv_lib.layer_fn(layer, "im2col"),
           "new": make_im2col_vjp(s, tuple(layer.w_shape[:2])),
           "laxdx": make_lax_col2im_dx(s, tuple(layer.w_shape[:2]))}
    gs = {k: jax.jit(conv_lib.fwd_bwd(f)) for k, f in fns.items()}
    ref = gs["lax"](x, w, ct)
    for k in ("ops", "new", "laxdx"):
      conv_lib.compare(layer, k, gs[k](x, w, ct), ref)  # raises if wrong
    t = {}
    for _ in range(2):  # two passes in turn; keep each one's best median
      for k, g in gs.items():
        m = time_fn(g, x, w, ct, steps=args.steps, warmup=1).median
        t[k] = min(t.get(k, m), m)
    for k in tot:
      tot[k] += t[k] * layer.count
    print(f"| {layer.name} | {layer.describe()} | {t['lax'] * 1e3:.1f} | {t['ops'] * 1e3:.1f} "
          f"| {t['new'] * 1e3:.1f} | {t['laxdx'] * 1e3:.1f} | {t['ops'] / t['lax']:.2f}x "
          f"| {t['new'] / t['lax']:.2f}x | {t['laxdx'] / t['lax']:.2f}x |", flush=True)
  print(f"| all | | {tot['lax'] * 1e3:.1f} | {tot['ops'] * 1e3:.1f} | {tot['new'] * 1e3:.1f} "
        f"| {tot['laxdx'] * 1e3:.1f} | {tot['ops'] / tot['lax']:.2f}x | {tot['new'] / tot['lax']:.2f}x "
        f"| {tot['laxdx'] / tot['lax']:.2f}x |")


if __name__ == "__main__":
  main()
