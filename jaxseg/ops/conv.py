"""N-d convolution, channels-last, four ways plus Pallas; all equal to `lax.conv_general_dilated`.

x: (N, *spatial, C_in); w: (*kernel, C_in // groups, C_out). Cross-correlation
(no kernel flip), TensorFlow SAME padding (the odd pad goes after), explicit
(lo, hi) padding, kernel (rhs) dilation and grouped / depthwise convs.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxseg.errors import ConfigError
from jaxseg.ops._common import ConvGeometry, check_impl, conv_geometry, prod

CONV_IMPLS = ("direct", "im2col", "matrix", "lax", "pallas")


def _spatial_letters(nd: int) -> str:
  return "DHW"[-nd:]


def conv_lax(x, w, geo: ConvGeometry):
  """XLA's convolution."""
  sp = _spatial_letters(geo.nd)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("N" + sp + "C", sp + "IO", "N" + sp + "C"))
  return lax.conv_general_dilated(x, w, geo.stride, list(geo.pads), rhs_dilation=geo.dilation,
                                  dimension_numbers=dn, feature_group_count=geo.groups)


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


def conv_direct(x, w, geo: ConvGeometry):
  """The direct sum over kernel taps: y = sum_t shift_t(x) @ w[t] (the "slide the filter" view)."""
  g = geo.groups
  w_taps = w.reshape(len(geo.taps), geo.cin // g, g, geo.cout // g)
  y = None
  for x_t, w_t in zip(tap_slices(x, geo), w_taps):
    if g == 1:
      term = jnp.tensordot(x_t, w_t[:, 0], axes=1)
    else:
      x_g = x_t.reshape(x_t.shape[:-1] + (g, geo.cin // g))
      term = jnp.einsum("...gc,cgo->...go", x_g, w_t).reshape(x_t.shape[:-1] + (geo.cout,))
    y = term if y is None else y + term
  return y


def conv_im2col(x, w, geo: ConvGeometry):
  """im2col: a (N*P_out, taps*C_in) patches matrix times the reshaped kernel, one GEMM per group."""
  n, g, t = x.shape[0], geo.groups, len(geo.taps)
  patches = jnp.stack(tap_slices(x, geo), axis=-2)           # (N, *out, T, Cin)
  rows = n * prod(geo.out_shape)
  if g == 1:
    y = patches.reshape(rows, t * geo.cin) @ w.reshape(t * geo.cin, geo.cout)
  else:
    p = patches.reshape(rows, t, g, geo.cin // g)
    wg = w.reshape(t, geo.cin // g, g, geo.cout // g)
    y = jnp.einsum("rtgc,tcgo->rgo", p, wg)
  return y.reshape((n,) + geo.out_shape + (geo.cout,))


def conv_matrix_impl(x, w, geo: ConvGeometry):
  from jaxseg.ops.conv_matrix import conv_matrix_apply
  return conv_matrix_apply(x, w, geo)


def conv_pallas(x, w, geo: ConvGeometry):
  try:
    from kernels.conv import conv_pallas as kernel
  except ImportError as e:
    raise ConfigError(f"conv impl 'pallas' needs kernels.conv.conv_pallas, which cannot be imported ({e})") from None
  return kernel(x, w, stride=geo.stride, padding=list(geo.pads), dilation=geo.dilation, groups=geo.groups)


def conv_lax_tuned(x, w, geo: ConvGeometry):
  """XLA's convolution, on the CPU with faster kernels where they pay (same values up to rounding).

  Many-channel layers on small images (3x3/1, 5x5/2) run as Winograd F(4x4, 3x3)
  (`winograd.applies`; rounding differs from the direct sum by 1e-6 to 1e-5 relative);
  few-channel layers on large images and first layers run the C++ kernels of
  `cpu_conv` (`cpu_conv.applies`); other layers where it pays get
  `conv_grad`'s GEMM backward pass; the rest is plain XLA.

  What the models' layers run for ``conv_impl="lax"``. Not the ``impl="lax"``
  of `conv` itself, which stays plain `lax.conv_general_dilated` (linear, so
  `jax.linear_transpose` and every transformation pass through it; a
  `jax.custom_vjp` has no transpose rule).
  """
  from jaxseg.ops import conv_grad, cpu_conv, winograd
  route = tuned_route(geo, x.dtype, x.shape[0])
  if route == "winograd":
    return winograd.conv_geo(*conv_grad.match_varying(x, w), geo)
  if route == "cpu_conv":
    return cpu_conv.conv_geo(*conv_grad.match_varying(x, w), geo)
  if route == "gemm_grad":
    return conv_grad.conv_lax_gemm_grad(x, w, geo)
  return conv_lax(x, w, geo)


def tuned_route(geo: ConvGeometry, dtype, batch: int) -> str:
  """Which path `conv_lax_tuned` takes: "winograd", "cpu_conv", "gemm_grad" or "xla"."""
  from jaxseg.ops import conv_grad, cpu_conv, winograd
  if winograd.applies(geo, dtype):
    return "winograd"
  if cpu_conv.applies(geo, dtype):
    return "cpu_conv"
  if conv_grad.applies(geo, batch):
    return "gemm_grad"
  return "xla"


_IMPLS = {"direct": conv_direct, "im2col": conv_im2col, "matrix": conv_matrix_impl,
          "lax": conv_lax, "pallas": conv_pallas}


def conv(x, w, *, stride=1, padding="SAME", dilation=1, groups=1, impl="lax"):
  """N-d convolution (cross-correlation), channels-last, with the semantics of `lax.conv_general_dilated`.

  Args:
    x: input (N, *spatial, C_in), 1 to 3 spatial dims.
    w: kernel (*kernel, C_in // groups, C_out).
    stride: int or one int per spatial dim.
    padding: "SAME" (TensorFlow's: output ceil(in / stride), odd pad after),
      "VALID", or a sequence of non-negative (lo, hi) pairs, one per spatial dim.
    dilation: kernel (rhs) dilation, int or per dim.
    groups: feature groups (groups == C_in == C_out is depthwise).
    impl: one of CONV_IMPLS: "direct" (sum over taps of shifted slices times
      C_in x C_out blocks), "im2col" (patches matrix times kernel matrix),
      "matrix" (sum over taps of sparse selection matrix times blocks),
      "lax" (XLA), "pallas" (kernels.conv.conv_pallas).

  Returns:
    (N, *out, C_out). Raises ConfigError for inconsistent shapes or arguments.
  """
  check_impl(impl, CONV_IMPLS, "conv")
  geo = conv_geometry(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=groups)
  return _IMPLS[impl](x, w, geo)
