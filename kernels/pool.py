"""2-D max pooling as Pallas kernels: forward with argmax, backward by gather.

Forward: the (-inf padded) input is split into stride phases and flattened as
in kernels/_implicit_gemm.py, so each window element is one contiguous
`(block_m, block_c)` read; the kernel keeps the running max and the index of
the first maximum (the element lax's gradient picks).
Backward: no select-and-scatter. Every input pixel gathers the cotangents of
the windows that contain it (per input stride phase, the same tap tables as
the transposed conv) and keeps those whose argmax is this pixel.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from kernels import backend
from kernels._implicit_gemm import (ForwardGeometry, TransposeGeometry, conv_pads, from_wide,
                                    pair, phase_split)

__all__ = ["PoolBlockSizes", "max_pool_pallas", "max_pool_reference"]


@dataclasses.dataclass(frozen=True)
class PoolBlockSizes:
  """block_m output pixels x block_c channels per tile (powers of two);
  block_c=None picks min(64, next power of two of C)."""
  block_m: int = 64
  block_c: int | None = None
  num_warps: int = 4
  num_stages: int = 1

  def resolve(self, c):
    bc = min(64, backend.next_power_of_2(c)) if self.block_c is None else self.block_c
    for name, b in (("block_m", self.block_m), ("block_c", bc)):
      if b < 1 or b & (b - 1):
        raise ValueError(f"{name}={b} must be a power of two")
    return self.block_m, bc


def _max_pool_kernel(x_ref, o_ref, a_ref, *, taps, block_m):
  m0 = pl.program_id(1) * block_m
  best = arg = None
  for t, (phase, shift) in enumerate(taps):
    v = x_ref[phase, pl.ds(m0 + shift, block_m), :]
    if best is None:
      best, arg = v, jnp.zeros(v.shape, jnp.int32)
    else:
      take = v > best      # strict: ties keep the first maximum
      best = jnp.where(take, v, best)
      arg = jnp.where(take, jnp.int32(t), arg)
  o_ref[...] = best
  a_ref[...] = arg


def _max_pool_bwd_kernel(tab_ref, g_ref, a_ref, o_ref, *, num_slots, block_m):
  po = pl.program_id(1)
  m0 = pl.program_id(2) * block_m
  acc = jnp.zeros(o_ref.shape, jnp.float32)
  for t in range(num_slots):
    shift = tab_ref[2 * (po * num_slots + t)]
    tap = tab_ref[2 * (po * num_slots + t) + 1]
    g = g_ref[0, pl.ds(m0 + shift, block_m), :]
    a = a_ref[0, pl.ds(m0 + shift, block_m), :]
    acc += jnp.where(a == tap, g.astype(jnp.float32), 0.0)
  o_ref[...] = acc.astype(o_ref.dtype)


@dataclasses.dataclass(frozen=True)
class _Config:
  geom: ForwardGeometry
  block_sizes: PoolBlockSizes
  interpret: bool | None  # None: chosen per platform when lowering (backend.pallas_call)


def _params(bs):
  return backend.compiler_params(num_warps=bs.num_warps, num_stages=bs.num_stages)


def _forward(x, cfg):
  geom, bs = cfg.geom, cfg.block_sizes
  n, _, _, c = x.shape
  bm, bc = bs.resolve(c)
  c_p = backend.round_up(c, bc)
  rows = backend.round_up(geom.rows(), bm)
  xf = phase_split(jnp.pad(x, ((0, 0),) * 3 + ((0, c_p - c),)), geom, -jnp.inf, rows)
  kernel = functools.partial(_max_pool_kernel, taps=tuple(geom.taps()), block_m=bm)
  out, arg = backend.pallas_call(
      kernel,
      grid=(n, rows // bm, c_p // bc),
      in_specs=[pl.BlockSpec((None, xf.shape[1], xf.shape[2], bc), lambda b, m, j: (b, 0, 0, j))],
      out_specs=[pl.BlockSpec((None, bm, bc), lambda b, m, j: (b, m, j))] * 2,
      out_shape=[jax.ShapeDtypeStruct((n, rows, c_p), x.dtype),
                 jax.ShapeDtypeStruct((n, rows, c_p), jnp.int32)],
      compiler_params=_params(bs), interpret=cfg.interpret, name="max_pool_fwd",
  )(xf)
  return from_wide(out, geom, c), from_wide(arg, geom, c)


def _backward(g, arg, cfg):
  geom, bs = cfg.geom, cfg.block_sizes
  tgeom = TransposeGeometry(geom)
  n, _, _, c = g.shape
  bm, bc = bs.resolve(c)
  c_p = backend.round_up(c, bc)
  rows = backend.round_up(tgeom.rows(), bm)
  shift, tap = tgeom.tables()
  gf = tgeom.pad_flat(g, rows, c_p, 0)
  af = tgeom.pad_flat(arg, rows, c_p, -1)
  tab = jnp.asarray(np.stack([shift, tap], -1).reshape(-1), jnp.int32)
  po, slots = shift.shape
  kernel = functools.partial(_max_pool_bwd_kernel, num_slots=slots, block_m=bm)
  out = backend.pallas_call(
      kernel,
      grid=(n, po, rows // bm, c_p // bc),
      in_specs=[pl.BlockSpec(tab.shape, lambda b, p, m, j: (0,)),
                pl.BlockSpec((None, 1, gf.shape[2], bc), lambda b, p, m, j: (b, 0, 0, j)),
                pl.BlockSpec((None, 1, af.shape[2], bc), lambda b, p, m, j: (b, 0, 0, j))],
      out_specs=pl.BlockSpec((None, None, bm, bc), lambda b, p, m, j: (b, p, m, j)),
      out_shape=jax.ShapeDtypeStruct((n, po, rows, c_p), g.dtype),
      compiler_params=_params(bs), interpret=cfg.interpret, name="max_pool_bwd",
  )(tab, gf, af)
  return tgeom.interleave(out, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, cfg):
  return _forward(x, cfg)[0]


def _max_pool_fwd(x, cfg):
  out, arg = _forward(x, cfg)
  return out, arg


def _max_pool_bwd(cfg, arg, g):
  return (_backward(g, arg, cfg),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _max_pool_jit(x, cfg):
  return _max_pool(x, cfg)


def pool_geometry(x_shape, window, stride, padding):
  if len(x_shape) != 4:
    raise ValueError(f"x.ndim={len(x_shape)}: the Pallas max pool is 2-D only (x (N, H, W, C))")
  window = pair(window, "window")
  stride = window if stride is None else pair(stride, "stride")
  in_hw = tuple(x_shape[1:3])
  pads = conv_pads(in_hw, window, stride, padding)
  if any(lo >= k or hi >= k for (lo, hi), k in zip(pads, window)):
    raise ValueError(f"padding {pads} must be smaller than the window {window}")
  geom = ForwardGeometry(in_hw, window, stride, pads, (1, 1))
  if min(geom.out_hw) < 1:
    raise ValueError(f"window {window} does not fit the input {in_hw} with padding {pads}")
  return geom


def max_pool_pallas(x, window, *, stride=None, padding="VALID", block_sizes=None, interpret=None):
  """Keras MaxPool2D on NHWC x: padding counts as -inf, stride defaults to window.

  The gradient goes to the first maximum of each window (as lax's does).
  """
  geom = pool_geometry(x.shape, window, stride, padding)
  cfg = _Config(geom, block_sizes or PoolBlockSizes(), backend.resolve_interpret(interpret))
  cfg.block_sizes.resolve(x.shape[-1])
  return _max_pool_jit(x, cfg)


def max_pool_reference(x, window, *, stride=None, padding="VALID"):
  """Plain-jnp reference: max over the window's strided slices of the -inf padded input."""
  geom = pool_geometry(x.shape, window, stride, padding)
  (plh, phh), (plw, phw) = geom.pads
  xp = jnp.pad(x, ((0, 0), (plh, phh), (plw, phw), (0, 0)), constant_values=-jnp.inf)
  (oh, ow), (sh, sw) = geom.out_hw, geom.stride
  return functools.reduce(jnp.maximum, [
      xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
      for i in range(geom.kernel_hw[0]) for j in range(geom.kernel_hw[1])])
