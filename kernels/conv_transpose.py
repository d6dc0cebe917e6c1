"""2-D transposed convolution as a Pallas kernel (the adjoint of kernels.conv).

Made for the large-stride case (the lab's 31x31 kernel at stride 16): the
strided GEMM + overlap-add is split by output stride phase. Each of the
`sh*sw` output phases receives exactly the kernel taps that land on it, so
it is a stride-1 implicit GEMM over the un-dilated input with that tap
subset (at most ceil(k/s)^2 taps, 4 for 31/16) and the overlapping adds
happen in the float32 accumulator instead of through atomics. No zeros are
inserted between input pixels, unlike the usual "conv of the dilated input".
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from kernels import backend
from kernels._implicit_gemm import (BlockSizes, ForwardGeometry, conv_forward, conv_input_grad,
                                    conv_pads, conv_weight_grad, pair)

__all__ = ["BlockSizes", "conv_transpose_pallas", "conv_transpose_reference",
           "deconv_output_length"]


def deconv_output_length(n, k, padding, stride, dilation, output_padding):
  """Keras' `deconv_output_length` for one dim; padding may be a (lo, hi) pair."""
  k_eff = (k - 1) * dilation + 1
  if isinstance(padding, str):
    if output_padding is None:
      return n * stride + (max(k_eff - stride, 0) if padding.upper() == "VALID" else 0)
    pad = k_eff // 2 if padding.upper() == "SAME" else 0
    return (n - 1) * stride + k_eff - 2 * pad + output_padding
  lo, hi = padding
  return (n - 1) * stride + k_eff - lo - hi + (output_padding or 0)


def transpose_geometry(y_shape, w_shape, stride, padding, output_padding, dilation):
  """The forward conv whose adjoint this is; ValueError naming what does not fit."""
  if len(y_shape) != 4 or len(w_shape) != 4:
    raise ValueError(f"y.ndim={len(y_shape)}, w.ndim={len(w_shape)}: the Pallas conv_transpose is "
                     "2-D only (y (N, H, W, C_in), w (kh, kw, C_out, C_in))")
  if w_shape[3] != y_shape[3]:
    raise ValueError(f"w.shape[3]={w_shape[3]} must equal the input channels y.shape[3]={y_shape[3]}")
  stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding={padding!r} must be 'SAME', 'VALID' or ((lo, hi), (lo, hi))")
    per_dim = (padding, padding)
  else:
    per_dim = conv_pads(None, None, None, padding)
  if output_padding is None:
    opad = (None, None)
  else:
    opad = (output_padding,) * 2 if isinstance(output_padding, int) else tuple(output_padding)
    if len(opad) != 2 or not all(isinstance(p, int) and p >= 0 for p in opad):
      raise ValueError(f"output_padding={output_padding!r} must be a non-negative int or 2 of them")
  kernel_hw = tuple(w_shape[:2])
  out_hw = tuple(deconv_output_length(n, k, p, s, d, op) for n, k, p, s, d, op in
                 zip(y_shape[1:3], kernel_hw, per_dim, stride, dilation, opad))
  if min(out_hw) < 1:
    raise ValueError(f"conv_transpose output {out_hw} would be empty")
  k_eff = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilation))
  geom = ForwardGeometry(out_hw, kernel_hw, stride, conv_pads(out_hw, k_eff, stride, padding),
                         dilation)
  if geom.out_hw != tuple(y_shape[1:3]):
    raise ValueError(f"padding={padding!r}, output_padding={output_padding!r}: the forward conv of "
                     f"size {out_hw} gives {geom.out_hw}, not the input size {tuple(y_shape[1:3])}")
  return geom


@dataclasses.dataclass(frozen=True)
class _Config:
  geom: ForwardGeometry
  block_sizes: BlockSizes
  interpret: bool | None  # None: chosen per platform when lowering (backend.pallas_call)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_transpose(y, w, cfg):
  return conv_input_grad(y, w, cfg.geom, cfg.block_sizes, cfg.interpret)


def _fwd(y, w, cfg):
  return _conv_transpose(y, w, cfg), (y, w)


def _bwd(cfg, res, g):
  # The map is linear in y (adjoint of conv), so its VJP is the conv itself;
  # for w it is the conv's weight gradient with the roles of x and dy taken
  # by the cotangent g and the input y.
  y, w = res
  dy = conv_forward(g, w, cfg.geom, cfg.block_sizes, cfg.interpret)
  dw = conv_weight_grad(g, y, cfg.geom, cfg.block_sizes, cfg.interpret)
  return dy.astype(y.dtype), dw.astype(w.dtype)


_conv_transpose.defvjp(_fwd, _bwd)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _conv_transpose_jit(y, w, cfg):
  return _conv_transpose(y, w, cfg)


def conv_transpose_pallas(y, w, *, stride=1, padding="SAME", output_padding=None, dilation=1,
                          block_sizes=None, interpret=None):
  """Transposed conv, same result as `jaxseg.ops.conv_transpose` (Keras Conv2DTranspose).

  y (N, H, W, C_in); w (kh, kw, C_out, C_in) in the forward conv's layout.
  Output (N, H', W', C_out) with H' from Keras' `deconv_output_length`.
  """
  geom = transpose_geometry(y.shape, w.shape, stride, padding, output_padding, dilation)
  cfg = _Config(geom, block_sizes or BlockSizes(), backend.resolve_interpret(interpret))
  cfg.block_sizes.resolve(y.shape[-1], w.shape[-2])
  return _conv_transpose_jit(y, w, cfg)


def conv_transpose_reference(y, w, *, stride=1, padding="SAME", output_padding=None, dilation=1):
  """Plain-jnp reference: scatter-add of y @ w[i, j]^T onto the strided output grid."""
  geom = transpose_geometry(y.shape, w.shape, stride, padding, output_padding, dilation)
  (h, wd), (sh, sw), (dh, dw) = geom.in_hw, geom.stride, geom.dilation
  (plh, phh), (plw, phw) = geom.pads
  n, oh, ow, _ = y.shape
  out = jnp.zeros((n, h + plh + phh + sh + dh * w.shape[0], wd + plw + phw + sw + dw * w.shape[1],
                   w.shape[2]), jnp.float32)
  for i in range(w.shape[0]):
    for j in range(w.shape[1]):
      contrib = jnp.einsum("nhwc,dc->nhwd", y, w[i, j], precision=jax.lax.Precision.HIGHEST)
      out = out.at[:, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                   j * dw:j * dw + (ow - 1) * sw + 1:sw].add(contrib)
  # Padded coordinates -> output coordinates (negative pads leave zeros).
  out = jax.lax.pad(out, jnp.zeros((), out.dtype), ((0, 0, 0), (-plh, 0, 0), (-plw, 0, 0), (0, 0, 0)))
  out = jnp.pad(out, ((0, 0), (0, max(0, h - out.shape[1])), (0, max(0, wd - out.shape[2])), (0, 0)))
  return out[:, :h, :wd].astype(y.dtype)
