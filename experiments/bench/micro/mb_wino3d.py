"""Prototype (not a route): 3-D 3x3x3 convs as Winograd F(4x4, 3x3) over the in-plane taps, depth taps direct.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python experiments/bench/micro/mb_wino3d.py \
        [--shapes "8,16,16,64,64;4,8,8,128,128"] [--rounds 9]

Each depth plane's 6x6 tiles go through B^T d B (`winograd.input_tiles` on the
volume as N*D images); the three depth taps become one product over 3*C_in
(the transformed planes z-1, z, z+1 side by side, `_vcat`); U = G g G^T per
depth tap (an XLA einsum); 36 batched products (`winograd.bmm`), then A^T m A.
The backward is the transposes, as in `jaxseg.ops.cpu.winograd`. It prints the
max error relative to XLA's conv (forward, dx, dW) and the median time of
forward + both gradients against `cpu.direct` (the `auto` route of 3-D convs),
in turn, batch 2. Issue 19 asked for a 2-D Winograd over in-plane taps "where it
pays"; experiments/bench/RESULTS.md (session 9) says where it did not.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.ops._common import conv_geometry
from jaxseg.ops.cpu import direct
from jaxseg.ops.cpu import winograd as wg
from jaxseg.ops.xla import conv_lax

GG = np.asarray(wg.GG, np.float32)   # (36, 9)


def _tiles(h, w):
  return -(-h // 4), -(-w // 4)


def _vcat(x):
  """(36, N*D*T, 3*C): the transformed tiles of planes z-1, z, z+1 (zeros outside) side by side."""
  n, d, h, wd, c = x.shape
  th, tw = _tiles(h, wd)
  v = wg.input_tiles(x.reshape(n * d, h, wd, c), th, tw, 1, 1).reshape(36, n, d, th * tw, c)
  vp = jnp.pad(v, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))
  return jnp.concatenate([vp[:, :, kz:kz + d] for kz in range(3)], axis=-1).reshape(36, n * d * th * tw, 3 * c)


@jax.custom_vjp
def conv3(x, w):
  """3x3x3 SAME stride-1 conv of x (N, D, H, W, C_in) with w (3, 3, 3, C_in, C_out)."""
  return _fwd(x, w)[0]


def _fwd(x, w):
  n, d, h, wd, _ = x.shape
  k = w.shape[-1]
  th, tw = _tiles(h, wd)
  wp = direct.pad_columns(w)
  u = jnp.einsum("pk,zkco->pzco", GG, wp.reshape(3, 9, *wp.shape[3:])).reshape(36, -1, wp.shape[-1])
  m = wg.bmm(_vcat(x), u, k)
  return wg.output_tiles(m, (n * d, h, wd, k), th, tw).reshape(n, d, h, wd, k), (x, w)


def _bwd(res, dy):
  x, w = res
  n, d, h, wd, c = x.shape
  k = w.shape[-1]
  th, tw = _tiles(h, wd)
  t = th * tw
  vcat = _vcat(x)
  dm = wg.output_tiles_t(dy.reshape(n * d, h, wd, k), th, tw)
  wt = direct.pad_columns(jnp.swapaxes(w, -1, -2).reshape(3, 9, k, c).transpose(2, 0, 1, 3))   # (k, 3, 9, c')
  ut = jnp.einsum("pj,kzjc->pkzc", GG, wt).reshape(36, k, -1)
  dvcat = wg.bmm(dm, ut, 3 * c).reshape(36, n, d, t, 3, c)
  dvp = jnp.zeros((36, n, d + 2, t, c), x.dtype)
  for kz in range(3):
    dvp = dvp.at[:, :, kz:kz + d].add(dvcat[:, :, :, :, kz])
  dx = wg.input_tiles_t(dvp[:, :, 1:1 + d].reshape(36, n * d * t, c), (n * d, h, wd, c), th, tw, 1, 1)
  du = wg.bmm_tn(vcat, dm).reshape(36, 3, c, k)
  dw = jnp.einsum("pj,pzco->zjco", GG, du).reshape(3, 3, 3, c, k)
  return dx.reshape(x.shape), dw


conv3.defvjp(_fwd, _bwd)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shapes", default="32,64,64,16,16;16,32,32,16,32;16,32,32,32,32;8,16,16,32,64;"
                 "8,16,16,64,64;4,8,8,64,128;4,8,8,128,128;8,16,16,128,64",
                 help="D,H,W,C_in,C_out; separated")
  p.add_argument("--rounds", type=int, default=9)
  args = p.parse_args(argv)
  print(f"batch 2, {args.rounds} rounds, median of fwd + dx + dW, each timed call after an untimed one")
  print("| D,H,W,Cin,Cout | direct ms | wino3d ms | wino3d/direct | max rel err y, dx, dW |")
  for spec in args.shapes.split(";"):
    dd, h, w_, ci, co = map(int, spec.split(","))
    r = np.random.default_rng(0)
    x = r.standard_normal((2, dd, h, w_, ci)).astype(np.float32)
    w = (r.standard_normal((3, 3, 3, ci, co)) / np.sqrt(27 * ci)).astype(np.float32)
    g = r.standard_normal((2, dd, h, w_, co)).astype(np.float32)
    geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)
    xj, wj, gj = jax.device_put((x, w, g))

    def step_of(f):
      def step(x, w, g):
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(g))
      return jax.jit(step)
    fns = {"direct": step_of(lambda x, w: direct.conv_geo(x, w, geo)), "wino3d": step_of(conv3)}
    ref = [np.asarray(a) for a in step_of(lambda x, w: conv_lax(x, w, geo))(xj, wj, gj)]
    err = [float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))) for a, b in zip(fns["wino3d"](xj, wj, gj), ref)]
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
      for k, f in fns.items():
        time.sleep(0.01)
        jax.block_until_ready(f(xj, wj, gj))
        t0 = time.perf_counter()
        jax.block_until_ready(f(xj, wj, gj))
        times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| {spec} | {med['direct']:.2f} | {med['wino3d']:.2f} | {med['wino3d'] / med['direct']:.2f} | "
          + ", ".join(f"{e:.1e}" for e in err) + " |", flush=True)


if __name__ == "__main__":
  main()
