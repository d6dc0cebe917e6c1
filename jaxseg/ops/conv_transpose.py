"""Transposed convolution: the adjoint of `conv`, several ways.

`conv_transpose(y, w, ...)` with w in the forward conv's layout
(*kernel, C_out_of_transpose, C_in_of_transpose) (Keras' Conv2DTranspose
kernel layout) is exactly the transpose of the linear map
x -> conv(x, w, stride, padding, dilation), taken at the input size Keras'
`deconv_output_length` gives. So `<conv(x, w), y> == <x, conv_transpose(y, w)>`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxseg.errors import ConfigError
from jaxseg.ops import auto, phase
from jaxseg.ops._common import ConvGeometry, check_impl, conv_transpose_geometry
from jaxseg.ops.conv_matrix import conv_transpose_matrix_apply
from jaxseg.ops.policy import ConvPolicy
from jaxseg.ops.xla import conv_lax, conv_transpose_lax
from jaxseg.registry import CONV_TRANSPOSE_IMPLS

def conv_transpose_direct(y, w, geo: ConvGeometry):
  """Scatter-add: each tap's (N, *n, C_out) contribution y @ w[t]^T lands on a strided grid.

  The strided placement is `lax.pad` with interior padding stride-1, so the
  whole thing is pads and adds (and differentiable).
  """
  w_taps = w.reshape((len(geo.taps),) + w.shape[-2:])
  zero = jnp.zeros((), y.dtype)
  x = None
  for tap, w_t in zip(geo.taps, w_taps):
    z = jnp.tensordot(y, w_t, axes=[[-1], [-1]])              # (N, *n, C_out)
    cfg = [(0, 0, 0)]
    for t, n, i, s, d, (lo, _) in zip(tap, geo.out_shape, geo.in_shape, geo.stride, geo.dilation, geo.pads):
      start = t * d - lo
      cfg.append((start, i - start - ((n - 1) * s + 1), s - 1))
    cfg.append((0, 0, 0))
    term = lax.pad(z, zero, cfg)
    x = term if x is None else x + term
  return x


def _overlap_add_axis(a, axis: int, n: int, k: int, s: int, d: int, lo: int, size: int):
  """Overlap-add axes (axis, axis+1) = (n positions, k taps) into one axis of `size`.

  Output position o*s + t*d - lo gets a[o, t]. With the taps dilated to
  k_eff = (k-1)*d + 1 and grouped as t = q*s + r, position o*s + t becomes
  block (o + q), offset r: one pad-and-add per q (ceil(k_eff / s) of them),
  then a reshape, instead of a scatter per tap.
  """
  zero = jnp.zeros((), a.dtype)
  none = [(0, 0, 0)] * a.ndim
  if d > 1:
    cfg = list(none)
    cfg[axis + 1] = (0, 0, d - 1)
    a = lax.pad(a, zero, cfg)
  k_eff = (k - 1) * d + 1
  q_n = -(-k_eff // s)
  cfg = list(none)
  cfg[axis + 1] = (0, q_n * s - k_eff, 0)
  a = lax.pad(a, zero, cfg)
  a = a.reshape(a.shape[:axis + 1] + (q_n, s) + a.shape[axis + 2:])
  acc = None
  for q in range(q_n):
    part = lax.index_in_dim(a, q, axis=axis + 1, keepdims=False)   # (..., n, s, ...)
    cfg = [(0, 0, 0)] * part.ndim
    cfg[axis] = (q, q_n - 1 - q, 0)
    part = lax.pad(part, zero, cfg)
    acc = part if acc is None else acc + part
  length = (n + q_n - 1) * s
  acc = acc.reshape(acc.shape[:axis] + (length,) + acc.shape[axis + 2:])
  cfg = [(0, 0, 0)] * acc.ndim
  cfg[axis] = (-lo, size + lo - length, 0)
  return lax.pad(acc, zero, cfg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_transpose_col2im(y, w, geo: ConvGeometry):
  """col2im: one GEMM y (N*P, C_in) x W (C_in, taps*C_out), then overlap-add of the columns.

  Its gradients are those of the forward conv it transposes, taken from XLA
  (<conv_transpose(y, w), g> = <y, conv(g, w)>): for the lab's 31x31 / 16
  layer that is faster than differentiating the overlap-add.
  """
  return _col2im(y, w, geo)


def _col2im_fwd(y, w, geo):
  return _col2im(y, w, geo), (y, w)


def _col2im_bwd(geo, res, g):
  y, w = res
  # conv_transpose(y, w) = A_w^T y, so <conv_transpose(y, w), g> = <y, conv(g, w)>.
  dy, vjp_w = jax.vjp(lambda q: conv_lax(g, q, geo), w)
  return dy, vjp_w(y)[0]


def _col2im(y, w, geo: ConvGeometry):
  nd, t = geo.nd, len(geo.taps)
  c_in, c_out = w.shape[-1], w.shape[-2]
  w_mat = w.reshape(t, c_out, c_in).transpose(2, 0, 1).reshape(c_in, t * c_out)
  cols = (y.reshape(-1, c_in) @ w_mat).reshape(y.shape[:-1] + geo.kernel + (c_out,))
  # (N, n1.., k1.., C) -> (N, n1, k1, n2, k2, .., C) so each dim's pair is adjacent.
  perm = [0] + [a for j in range(nd) for a in (1 + j, 1 + nd + j)] + [1 + 2 * nd]
  a = cols.transpose(perm)
  for j in range(nd):
    a = _overlap_add_axis(a, 1 + j, geo.out_shape[j], geo.kernel[j], geo.stride[j], geo.dilation[j],
                          geo.pads[j][0], geo.in_shape[j])
  return a


conv_transpose_col2im.defvjp(_col2im_fwd, _col2im_bwd)


def conv_transpose_phase(y, w, geo: ConvGeometry):
  """Stride-phase form (`jaxseg.ops.phase`): one stride-1 XLA conv and a depth-to-space (dilation 1)."""
  if any(d != 1 for d in geo.dilation):
    raise ConfigError(f"conv_transpose impl 'phase' supports dilation 1 only, got {geo.dilation}")
  return phase.conv_transpose_phase(y, w, geo)


_IMPLS = {"direct": conv_transpose_direct, "matrix": conv_transpose_matrix_apply, "lax": conv_transpose_lax,
          "col2im": conv_transpose_col2im, "phase": conv_transpose_phase}


def conv_transpose(y, w, *, stride=1, padding="SAME", output_padding=None, dilation=1, impl="lax",
                   policy: ConvPolicy | None = None):
  """Transposed convolution (Keras Conv2DTranspose semantics), the adjoint of `conv`.

  Args:
    y: input (N, *spatial, C_in), 1 to 3 spatial dims.
    w: kernel (*kernel, C_out, C_in) -- the layout of the forward conv that maps
      C_out channels to C_in, which is Keras' Conv2DTranspose kernel layout.
    stride, dilation: int or per spatial dim.
    padding: "SAME", "VALID" or a sequence of (lo, hi) pairs: the padding of
      the forward conv.
    output_padding: None or int / per-dim ints (< stride), as in Keras. With
      SAME, the output is placed as Keras places it, which makes this the
      adjoint of the conv with the explicit pads that placement implies
      (the same as TF SAME whenever a TF-SAME conv has these sizes).
    impl: one of CONV_TRANSPOSE_IMPLS: "direct" (a scatter-add per tap), "matrix"
      (W^T of `conv_matrix`), "lax" (plain XLA: a conv over the stride-dilated
      input), "col2im" (one GEMM + overlap-add), "phase" (stride phases: one
      stride-1 conv + depth-to-space), "pallas" (kernels.conv_transpose), "auto"
      (the fastest tested route on the platform it is lowered for: `jaxseg.ops.auto`).
    policy: the `ConvPolicy` of "auto" (default: `DEFAULT_POLICY`); other impls ignore it.

  Returns:
    (N, *out, C_out) with out from Keras' `deconv_output_length`: in*stride
    for SAME, in*stride + max(k_eff - stride, 0) for VALID,
    (in-1)*stride + k_eff - 2*pad + output_padding when output_padding is
    given (pad = k_eff//2 for SAME, 0 for VALID), and
    (in-1)*stride + k_eff - lo - hi + output_padding for explicit pads.
  """
  check_impl(impl, CONV_TRANSPOSE_IMPLS, "conv_transpose")
  geo = conv_transpose_geometry(y.shape, w.shape, stride=stride, padding=padding,
                                output_padding=output_padding, dilation=dilation)
  if impl == "pallas":
    try:
      from kernels.conv_transpose import conv_transpose_pallas
    except ImportError as e:
      raise ConfigError("conv_transpose impl 'pallas' needs kernels.conv_transpose.conv_transpose_pallas, "
                        f"which cannot be imported ({e})") from None
    opad = output_padding if output_padding is None or isinstance(output_padding, (tuple, list)) \
        else (output_padding,) * geo.nd
    try:
      return conv_transpose_pallas(y, w, stride=geo.stride, padding=padding, output_padding=opad,
                                   dilation=geo.dilation)
    except ValueError as e:
      raise ConfigError(f"conv_transpose impl 'pallas': {e}") from None
  if impl == "auto":
    return auto.conv_transpose_auto(y, w, geo, policy)
  return _IMPLS[impl](y, w, geo)


def conv_transpose_route(y_shape, w_shape, *, stride=1, padding="SAME", output_padding=None, dilation=1,
                         batch: int | None = None, dtype=jnp.float32, platform: str | None = None,
                         policy: ConvPolicy | None = None) -> str:
  """The route `conv_transpose(..., impl="auto")` takes for these shapes on `platform`: one of
  `auto.TRANSPOSE_ROUTES`, and for "phase" the route of its stride-1 conv ("phase + gemm_grad")."""
  geo = conv_transpose_geometry(tuple(y_shape), tuple(w_shape), stride=stride, padding=padding,
                                output_padding=output_padding, dilation=dilation)
  return auto.describe("conv_transpose", geo, dtype=dtype, batch=y_shape[0] if batch is None else batch,
                       platform=platform or jax.default_backend(), policy=policy)

