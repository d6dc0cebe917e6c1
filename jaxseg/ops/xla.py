"""Plain XLA convolutions and the tap slices the other forms are built from.

A leaf module: it imports nothing else of `jaxseg.ops` but the geometry, so
every implementation can build on it without import cycles.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxseg.ops._common import ConvGeometry


def spatial_letters(nd: int) -> str:
  return "DHW"[-nd:]


def conv_lax(x, w, geo: ConvGeometry):
  """XLA's convolution (`lax.conv_general_dilated`), channels-last."""
  sp = spatial_letters(geo.nd)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("N" + sp + "C", sp + "IO", "N" + sp + "C"))
  return lax.conv_general_dilated(x, w, geo.stride, list(geo.pads), rhs_dilation=geo.dilation,
                                  dimension_numbers=dn, feature_group_count=geo.groups)


def conv_transpose_lax(y, w, geo: ConvGeometry):
  """The adjoint of `conv_lax` for the forward geometry `geo`: a stride-1 conv over the
  stride-dilated y with the flipped, channel-swapped kernel (what XLA's autodiff does)."""
  nd = geo.nd
  sp = spatial_letters(nd)
  wt = jnp.flip(w, axis=tuple(range(nd))).swapaxes(-1, -2)
  pads = []
  for n, i, k, s, d, (lo, _) in zip(geo.out_shape, geo.in_shape, geo.kernel, geo.stride, geo.dilation, geo.pads):
    k_eff = (k - 1) * d + 1
    pl = k_eff - 1 - lo
    pads.append((pl, i + k_eff - 2 - (n - 1) * s - pl))
  dn = lax.conv_dimension_numbers(y.shape, wt.shape, ("N" + sp + "C", sp + "IO", "N" + sp + "C"))
  return lax.conv_general_dilated(y, wt, (1,) * nd, pads, lhs_dilation=geo.stride,
                                  rhs_dilation=geo.dilation, dimension_numbers=dn)


def tap_slices(x, geo: ConvGeometry):
  """For every kernel tap, the (N, *out, C_in) input values that tap multiplies.

  The input is zero-padded once; each tap is then one strided slice of it.
  """
  xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in geo.pads] + [(0, 0, 0)])
  out = []
  for tap in geo.taps:
    start = [t * d for t, d in zip(tap, geo.dilation)]
    limit = [s0 + (o - 1) * s + 1 for s0, o, s in zip(start, geo.out_shape, geo.stride)]
    out.append(lax.slice(xp, [0] + start + [0], [x.shape[0]] + limit + [x.shape[-1]],
                         [1] + list(geo.stride) + [1]))
  return out
