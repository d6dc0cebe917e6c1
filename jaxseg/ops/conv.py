"""N-d convolution, channels-last, several ways; all equal to `lax.conv_general_dilated`.

x: (N, *spatial, C_in); w: (*kernel, C_in // groups, C_out). Cross-correlation
(no kernel flip), TensorFlow SAME padding (the odd pad goes after), explicit
(lo, hi) padding, kernel (rhs) dilation and grouped / depthwise convs.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.ops import auto
from jaxseg.ops._common import ConvGeometry, check_impl, conv_geometry, prod
from jaxseg.ops.conv_matrix import conv_matrix_apply
from jaxseg.ops.policy import ConvPolicy
from jaxseg.ops.xla import conv_lax, tap_slices
from jaxseg.registry import CONV_IMPLS


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


def conv_pallas(x, w, geo: ConvGeometry):
  """`kernels.conv.conv_pallas`: compiled for GPUs, interpreted on the CPU (chosen when lowering)."""
  try:
    from kernels.conv import conv_pallas as kernel
  except ImportError as e:
    raise ConfigError(f"conv impl 'pallas' needs kernels.conv.conv_pallas, which cannot be imported ({e})") from None
  try:
    return kernel(x, w, stride=geo.stride, padding=list(geo.pads), dilation=geo.dilation, groups=geo.groups)
  except ValueError as e:
    raise ConfigError(f"conv impl 'pallas': {e}") from None


_IMPLS = {"direct": conv_direct, "im2col": conv_im2col, "matrix": conv_matrix_apply,
          "lax": conv_lax, "pallas": conv_pallas}


def conv(x, w, *, stride=1, padding="SAME", dilation=1, groups=1, impl="lax",
         policy: ConvPolicy | None = None):
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
      "lax" (plain XLA: its conv and its autodiff), "pallas"
      (kernels.conv.conv_pallas), "auto" (the fastest tested route on the
      platform it is lowered for: `jaxseg.ops.auto`; the models' default).
    policy: the `ConvPolicy` of "auto" (default: `DEFAULT_POLICY`); other impls ignore it.

  Returns:
    (N, *out, C_out). Raises ConfigError for inconsistent shapes or arguments.
  """
  check_impl(impl, CONV_IMPLS, "conv")
  geo = conv_geometry(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=groups)
  if impl == "auto":
    return auto.conv_auto(x, w, geo, policy)
  return _IMPLS[impl](x, w, geo)


def conv_route(x_shape, w_shape, *, stride=1, padding="SAME", dilation=1, groups=1,
               dtype=jnp.float32, platform: str | None = None, policy: ConvPolicy | None = None) -> str:
  """The route `conv(..., impl="auto")` takes for these shapes when lowered for `platform`.

  One of `auto.CONV_ROUTES`: "winograd", "winograd3d", "winograd3d_products", "cpu_direct",
  "gemm_grad" or "xla"
  (`auto.ROUTE_NOTES` says what each is). platform: "cpu", "cuda", "rocm",
  "tpu" (default: JAX's default backend here).
  """
  import jax
  geo = conv_geometry(tuple(x_shape), tuple(w_shape), stride=stride, padding=padding,
                      dilation=dilation, groups=groups)
  return auto.conv_route(geo, dtype=dtype, batch=x_shape[0], policy=policy,
                         platform=platform or jax.default_backend())
