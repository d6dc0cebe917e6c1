"""Winograd F(4x4, 3x3) (`jaxseg.ops.cpu.winograd`, session 6) vs what the models ran before it.

Per layer at batch 8, 256^2 inputs: forward and forward+backward (random
cotangent) of the `auto` route with Winograd off (`ConvPolicy(winograd=False)`:
the C++ direct kernels, or XLA's conv with `conv_grad`'s backward, as before
session 6) and of `winograd.conv_geo`, alternated, median of --steps calls;
then the parts of the Winograd form alone (the four tile transforms and the
three batched products, with the products' GFLOP/s) and XLA's batched dot on
the same shapes.
usage: mb_winograd.py [--steps 7] [--layers fcn_conv2,fcn_conv3] [--batch 8]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.ops import ConvPolicy
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.auto import conv_auto
from jaxseg.ops.cpu import winograd

NO_WINOGRAD = ConvPolicy(winograd=False)

# name: (H, W, Cin, Cout, k, stride), batch 8, SAME
LAYERS = {
    "fcn_conv2": (64, 64, 100, 200, 5, 2), "fcn_conv3": (16, 16, 200, 300, 3, 1),
    "fcn_conv4": (16, 16, 300, 300, 3, 1), "unet_enc3b": (64, 64, 64, 64, 3, 1),
    "unet_enc4b": (32, 32, 128, 128, 3, 1), "unet_bottom": (16, 16, 256, 256, 3, 1),
    "unet_dec4a": (32, 32, 256, 128, 3, 1),
}


def median_time(f, *args, steps):
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=7)
  p.add_argument("--layers", default=",".join(LAYERS))
  p.add_argument("--batch", type=int, default=8)
  a = p.parse_args()
  r = np.random.default_rng(0)
  print("| layer | before fwd ms | Winograd fwd ms | before f+b ms | Winograd f+b ms | f+b ratio | max rel err |")
  print("|---|---|---|---|---|---|---|")
  parts = []
  for name in a.layers.split(","):
    h, w_, ci, co, k, s = LAYERS[name]
    x = jnp.asarray(r.standard_normal((a.batch, h, w_, ci)), jnp.float32)
    w = jnp.asarray(r.standard_normal((k, k, ci, co)) / np.sqrt(k * k * ci), jnp.float32)
    g = jnp.asarray(r.standard_normal((a.batch, h // s, w_ // s, co)), jnp.float32)
    geo = conv_geometry(x.shape, w.shape, stride=s, padding="SAME", dilation=1, groups=1)
    assert winograd.supports(geo)

    before = lambda x, w: conv_auto(x, w, geo, NO_WINOGRAD)
    wino = lambda x, w: winograd.conv_geo(x, w, geo)
    fns = {n: (jax.jit(f), jax.jit(lambda x, w, g, f=f: jax.vjp(f, x, w)[1](g))) for n, f in
           (("before", before), ("wino", wino))}
    err = float(jnp.max(jnp.abs(fns["wino"][0](x, w) - fns["before"][0](x, w))) / jnp.max(jnp.abs(fns["before"][0](x, w))))
    t = {n: [] for n in fns}
    for _ in range(2):
      for n, (f, fb) in fns.items():
        t[n].append((median_time(f, x, w, steps=a.steps), median_time(fb, x, w, g, steps=a.steps)))
    med = {n: (np.median([v[0] for v in t[n]]), np.median([v[1] for v in t[n]])) for n in t}
    print(f"| {name} | {med['before'][0] * 1e3:.1f} | {med['wino'][0] * 1e3:.1f} | {med['before'][1] * 1e3:.1f} "
          f"| {med['wino'][1] * 1e3:.1f} | {med['wino'][1] / med['before'][1]:.2f}x | {err:.1e} |", flush=True)
    parts.append((name, h // s, w_ // s, ci * s * s, co))

  print("\n| layer | in | in^T | out | out^T ms | bmm | bmm (dx) | bmm_tn ms | GFLOP/s each | XLA batched dot ms |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name, oh, ow, c, k in parts:
    th, tw = -(-oh // 4), -(-ow // 4)
    t_ = a.batch * th * tw
    xi = jnp.asarray(r.standard_normal((a.batch, oh + 2, ow + 2, c)), jnp.float32)
    v = jnp.asarray(r.standard_normal((36, t_, c)), jnp.float32)
    u = jnp.asarray(r.standard_normal((36, c, k)), jnp.float32)
    ut = jnp.asarray(r.standard_normal((36, k, c)), jnp.float32)
    m = jnp.asarray(r.standard_normal((36, t_, k)), jnp.float32)
    dy = jnp.asarray(r.standard_normal((a.batch, oh, ow, k)), jnp.float32)
    tm = {
        "in": median_time(jax.jit(lambda x: winograd.input_tiles(x, th, tw, 0, 0)), xi, steps=a.steps),
        "inT": median_time(jax.jit(lambda v: winograd.input_tiles_t(v, xi.shape, th, tw, 0, 0)), v, steps=a.steps),
        "out": median_time(jax.jit(lambda m: winograd.output_tiles(m, dy.shape, th, tw)), m, steps=a.steps),
        "outT": median_time(jax.jit(lambda d: winograd.output_tiles_t(d, th, tw)), dy, steps=a.steps),
        "bmm": median_time(jax.jit(winograd.bmm), v, u, steps=a.steps),
        "bmmT": median_time(jax.jit(winograd.bmm), m, ut, steps=a.steps),
        "bmm_tn": median_time(jax.jit(winograd.bmm_tn), v, m, steps=a.steps),
        "xla": median_time(jax.jit(lambda a_, b_: jnp.einsum("tpc,tck->tpk", a_, b_)), v, u, steps=a.steps),
    }
    fl = 2 * 36 * t_ * c * k / 1e9
    print(f"| {name} | " + " | ".join(f"{tm[n] * 1e3:.2f}" for n in ("in", "inT", "out", "outT", "bmm", "bmmT", "bmm_tn"))
          + f" | {fl / tm['bmm']:.0f} / {fl / tm['bmmT']:.0f} / {fl / tm['bmm_tn']:.0f} | {tm['xla'] * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
  main()
