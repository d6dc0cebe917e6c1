"""XLA convolutions with weight gradients as GEMMs, for XLA:CPU.

`ops.conv(..., impl="lax")` computes exactly `lax.conv_general_dilated`; on
the CPU its backward pass is this module's: the input gradient is XLA's own
(the transposed conv), the weight gradient dW[t] = X_t^T dY is formed as
GEMMs instead of XLA's weight-gradient convolution, which XLA:CPU runs 2-4x
slower than the forward conv of the same FLOPs (lab FCN, batch 8, 256^2:
5x5/2 100->200 layer dW 189 -> 108 ms, first layer 1->100 dW 84 -> 19 ms;
experiments/bench/RESULTS.md). Layers with few input values per output
(taps * C_in <= 64, the first layer of an image net) also run their forward
pass as im2col, one GEMM, which XLA:CPU does faster than its conv there.

Two forms of dW, chosen by the size of the patches matrix:
- small taps * C_in: the patches transposed, (taps * C_in, N * P) @ dY (N * P, C_out),
  one GEMM with a long contraction;
- otherwise one GEMM per tap, X_t^T (C_in, N * P) @ dY: no patches matrix
  (taps times the input) is ever built.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg.ops._common import ConvGeometry

SMALL_PATCH = 64   # taps * C_in at or below which a layer uses im2col forward and one dW GEMM


def applies(geo: ConvGeometry) -> bool:
  """Whether the GEMM weight gradient is used: ungrouped convs, on the CPU."""
  return geo.groups == 1 and jax.default_backend() == "cpu"


def conv_lax_gemm_grad(x, w, geo: ConvGeometry):
  """`lax.conv_general_dilated` whose VJP computes dW with GEMMs (see the module doc)."""
  return _conv(x, w, geo)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geo):
  return _forward(x, w, geo)


def _small(geo: ConvGeometry) -> bool:
  return len(geo.taps) * geo.cin <= SMALL_PATCH


def _forward(x, w, geo):
  from jaxseg.ops.conv import conv_im2col, conv_lax
  return conv_im2col(x, w, geo) if _small(geo) else conv_lax(x, w, geo)


def _fwd(x, w, geo):
  return _forward(x, w, geo), (x, w)


def _bwd(geo, res, g):
  from jaxseg.ops.conv import conv_lax
  x, w = res
  # XLA drops dx where nobody uses it (the first layer's input is the data).
  dx = jax.vjp(lambda v: conv_lax(v, w, geo), x)[1](g)[0]
  return dx, weight_grad(x, g, geo)


def weight_grad(x, g, geo: ConvGeometry):
  """dW (*kernel, C_in, C_out) of conv(x, W) for the output cotangent g (ungrouped)."""
  from jaxseg.ops.conv import tap_slices
  cin, cout = geo.cin, geo.cout
  gm = g.reshape(-1, cout)
  slices = tap_slices(x, geo)
  if _small(geo):
    cols = jnp.stack([s.reshape(-1, cin).T for s in slices])      # (taps, C_in, N*P)
    dw = cols.reshape(len(slices) * cin, -1) @ gm
  else:
    dw = jnp.stack([s.reshape(-1, cin).T @ gm for s in slices])
  return dw.reshape(geo.kernel + (cin, cout)).astype(g.dtype)


_conv.defvjp(_fwd, _bwd)
