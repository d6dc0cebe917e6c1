"""XLA's convolution with its gradients as GEMMs, for the CPU layers where XLA:CPU's are slow.

The forward is exactly `lax.conv_general_dilated`. The weight gradient
dW[t] = X_t^T dY is formed as GEMMs instead of XLA's weight-gradient conv,
and a strided conv's input gradient is one of (``ConvPolicy.strided_dx``):
stride phases on the C++ forward kernel (`cpu.direct.strided_input_grad`),
one GEMM and an overlap-add by stride phases (`phase.col2im_input_grad`), or XLA's
conv over the stride-dilated cotangent. A stride-1 conv's input gradient is
XLA's own. `jaxseg.ops.auto` decides which layers take this form: strided
convs (XLA:CPU's strided dW is 2-4x slower than its forward) and stride-1
convs with few output rows and small patches.

Two forms of dW, chosen by the size of the patches matrix:
- small taps * C_in (<= ``gemm_small_patch``): the patches transposed,
  (taps * C_in, N * P) @ dY, one GEMM with a long contraction;
- otherwise one GEMM per tap, X_t^T (C_in, N * P) @ dY: no patches matrix
  (taps times the input) is ever built.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg.ops import phase
from jaxseg.ops._common import ConvGeometry
from jaxseg.ops.cpu import direct
from jaxseg.ops.sharding import match_varying
from jaxseg.ops.xla import conv_lax, tap_slices

DX_FORMS = ("kernel", "col2im", "xla")


def conv(x, w, geo: ConvGeometry, *, dx: str = "xla", small_patch: int = 64):
  """`lax.conv_general_dilated` whose VJP computes dW with GEMMs and dx in the form `dx`.

  dx: "kernel" (strided 2-D convs: stride phases on the C++ forward kernel,
  which must be available), "col2im" (strided convs: `phase.col2im_input_grad`) or
  "xla" (XLA's input gradient). small_patch: taps * C_in at or below which dW is
  one GEMM over the transposed patches (see the module doc).
  """
  if dx not in DX_FORMS:
    raise ValueError(f"dx must be one of {DX_FORMS}, got {dx!r}")
  return _conv(*match_varying(x, w), geo, dx, small_patch)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, geo, dx, small_patch):
  return conv_lax(x, w, geo)


def _fwd(x, w, geo, dx, small_patch):
  return conv_lax(x, w, geo), (x, w)


def _bwd(geo, dx_form, small_patch, res, g):
  x, w = res
  # XLA drops dx where nobody uses it (the first layer's input is the data).
  strided = any(s > 1 for s in geo.stride) and all(d == 1 for d in geo.dilation)
  if strided and dx_form == "kernel":
    dx = direct.strided_input_grad(g, w, geo)
  elif strided and dx_form == "col2im":
    dx = phase.col2im_input_grad(g, w, geo)
  else:
    dx = jax.vjp(lambda v: conv_lax(v, w, geo), x)[1](g)[0]
  return dx, weight_grad(x, g, geo, small_patch=small_patch)


_conv.defvjp(_fwd, _bwd)


def weight_grad(x, g, geo: ConvGeometry, *, small_patch: int = 64):
  """dW (*kernel, C_in, C_out) of conv(x, W) for the output cotangent g (ungrouped)."""
  cin, cout = geo.cin, geo.cout
  gm = g.reshape(-1, cout)
  slices = tap_slices(x, geo)
  if len(slices) * cin <= small_patch:
    cols = jnp.stack([s.reshape(-1, cin).T for s in slices])      # (taps, C_in, N*P)
    dw = cols.reshape(len(slices) * cin, -1) @ gm
  else:
    dw = jnp.stack([s.reshape(-1, cin).T @ gm for s in slices])
  return dw.reshape(geo.kernel + (cin, cout)).astype(g.dtype)

