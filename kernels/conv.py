"""2-D convolution as an implicit GEMM Pallas kernel (NHWC, HWIO).

The grid tiles (batch, output pixels, output channels); the body loops over
kernel taps and input-channel blocks, accumulating `jnp.dot`s in float32. No
im2col matrix is built: see kernels/_implicit_gemm.py for the layout. The
custom VJP computes the input gradient with the transposed-conv kernel and
the weight gradient with a correlation kernel, so a model trains end to end
on these kernels.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from kernels import backend
from kernels._implicit_gemm import (BlockSizes, ForwardGeometry, conv_forward, conv_input_grad,
                                    conv_pads, conv_weight_grad, pair)

__all__ = ["BlockSizes", "conv_pallas", "conv_reference"]


@dataclasses.dataclass(frozen=True)
class _Config:
  geom: ForwardGeometry
  block_sizes: BlockSizes
  interpret: bool | None  # None: chosen per platform when lowering (backend.pallas_call)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, cfg):
  return conv_forward(x, w, cfg.geom, cfg.block_sizes, cfg.interpret)


def _conv_fwd(x, w, cfg):
  return _conv(x, w, cfg), (x, w)


def _conv_bwd(cfg, res, dy):
  x, w = res
  dx = conv_input_grad(dy, w, cfg.geom, cfg.block_sizes, cfg.interpret)
  dw = conv_weight_grad(x, dy, cfg.geom, cfg.block_sizes, cfg.interpret)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _conv_jit(x, w, cfg):
  return _conv(x, w, cfg)


def forward_geometry(x_shape, w_shape, stride, padding, dilation, groups):
  """Checks shapes (ValueError naming the limit) and returns the geometry."""
  if groups != 1:
    raise ValueError(f"groups={groups}: the Pallas conv supports only groups=1")
  if len(x_shape) != 4 or len(w_shape) != 4:
    raise ValueError(f"x.ndim={len(x_shape)}, w.ndim={len(w_shape)}: the Pallas conv is 2-D "
                     "only (x (N, H, W, C), w (kh, kw, Cin, Cout))")
  if w_shape[2] != x_shape[3]:
    raise ValueError(f"w.shape[2]={w_shape[2]} must equal the input channels x.shape[3]={x_shape[3]}")
  stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
  kernel_hw, in_hw = tuple(w_shape[:2]), tuple(x_shape[1:3])
  k_eff = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilation))
  pads = conv_pads(in_hw, k_eff, stride, padding)
  geom = ForwardGeometry(in_hw, kernel_hw, stride, pads, dilation)
  if min(geom.out_hw) < 1:
    raise ValueError(f"conv output would be empty: input {in_hw}, kernel {kernel_hw}, "
                     f"dilation {dilation}, padding {pads}")
  return geom


def conv_pallas(x, w, *, stride=1, padding="SAME", dilation=1, groups=1, block_sizes=None,
                interpret=None):
  """Same result as `lax.conv_general_dilated(x, w, stride, padding, rhs_dilation=dilation,
  dimension_numbers=("NHWC", "HWIO", "NHWC"))`, differentiable.

  interpret=None runs the kernel in Pallas interpret mode when lowered for the
  CPU and compiled (Triton) when lowered for a GPU (`backend.pallas_call`).
  """
  geom = forward_geometry(x.shape, w.shape, stride, padding, dilation, groups)
  cfg = _Config(geom, block_sizes or BlockSizes(), backend.resolve_interpret(interpret))
  cfg.block_sizes.resolve(x.shape[-1], w.shape[-1])  # raise bad block sizes early
  return _conv_jit(x, w, cfg)


def conv_reference(x, w, *, stride=1, padding="SAME", dilation=1):
  """Plain-jnp reference: the sum over kernel taps of strided slices times w."""
  geom = forward_geometry(x.shape, w.shape, stride, padding, dilation, 1)
  (plh, phh), (plw, phw) = geom.pads
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (plh, phh, 0), (plw, phw, 0), (0, 0, 0)))
  (oh, ow), (sh, sw), (dh, dw) = geom.out_hw, geom.stride, geom.dilation
  out = 0.0
  for i in range(w.shape[0]):
    for j in range(w.shape[1]):
      patch = xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
      out = out + jnp.einsum("nhwc,cd->nhwd", patch, w[i, j],
                             precision=jax.lax.Precision.HIGHEST)
  return out.astype(x.dtype)
