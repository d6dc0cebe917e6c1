"""Direct 2-D and 3-D convolution by the C++ kernels (through XLA's FFI), and its gradients.

`_cpu_conv.cc` holds a convolution (any stride and padding) and its weight
gradient, with output channels in vector lanes and a strip of output pixels
in registers (each is a loop over kernel rows and one flat loop over the
(column, channel) taps). The input gradient of a stride-1 conv is the same
forward kernel with the kernel flipped, its channel axes swapped and the pads
mirrored; a strided conv's is one such stride-1 conv per stride phase
(`strided_input_grad`). Below `min_dx_channels` input channels the input
gradient is one GEMM and an overlap-add (`phase.col2im_input_grad`): the
kernel holds 16 output channels per vector and would fill few of them.

A transposed conv whose kernel equals its stride (the U-Net's 2x2(x2)/2
up-convs) has its own forward kernel, which writes each stride phase's GEMM
rows in place (`conv_transpose_geo`); its gradients are the strided forward
and weight-gradient kernels.

Which layers run here is `jaxseg.ops.auto`'s rule (`ConvPolicy`); `conv` is
the direct entry point for tests and benchmarks.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError
from jaxseg.ops import phase
from jaxseg.ops._common import ConvGeometry, conv_geometry, prod
from jaxseg.ops.cpu import build
from jaxseg.ops.sharding import match_varying, vary_like

VECTOR = 16  # float32 lanes of a 512-bit vector: output channels are padded to a multiple of it
MIN_DX_CHANNELS = 16


def supports(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether the kernels compute this conv at all (regardless of speed): 2-D or 3-D, float32,
  ungrouped, undilated."""
  return (geo.nd in (2, 3) and geo.groups == 1 and all(d == 1 for d in geo.dilation)
          and jnp.dtype(dtype) == jnp.float32 and min(geo.out_shape) > 0)


def pad_columns(w, multiple: int = VECTOR):
  """w with zero columns appended to its last axis up to a multiple of `multiple`."""
  pad = -w.shape[-1] % multiple
  return jnp.pad(w, ((0, 0),) * (w.ndim - 1) + ((0, pad),)) if pad else w


def _attrs(geo: ConvGeometry) -> dict:
  """Strides and pads before, depth first; a 2-D conv has depth stride 1 and pad 0."""
  stride = (1,) * (3 - geo.nd) + tuple(geo.stride)
  lo = (0,) * (3 - geo.nd) + tuple(p for p, _ in geo.pads)
  return {k: np.int64(v) for k, v in zip(("sd", "sh", "sw", "pd", "ph", "pw"), stride + lo)}


def forward(x, w, geo: ConvGeometry):
  """The forward kernel alone (no VJP), its result varying like x inside a shard_map."""
  build.require()
  out = jax.ShapeDtypeStruct((x.shape[0], *geo.out_shape, w.shape[-1]), x.dtype)
  y = jax.ffi.ffi_call("jaxseg_conv_forward", out, vmap_method="sequential")(x, pad_columns(w), **_attrs(geo))
  return vary_like(y, x)


def weight_grad(x, dy, geo: ConvGeometry):
  """dW (*kernel, C_in, C_out) by the weight-gradient kernel."""
  build.require()
  out = jax.ShapeDtypeStruct((*geo.kernel, geo.cin, geo.cout), x.dtype)
  return jax.ffi.ffi_call("jaxseg_conv_weight_grad", out, vmap_method="sequential")(x, dy, **_attrs(geo))


def flipped_forward(dy, w, dgeo: ConvGeometry):
  """The stride-1 conv `dgeo` of dy with w (*kernel, C_in, C_out) flipped and its channel axes
  swapped, by the input-gradient kernel (which flips w itself): (N, *dgeo.out_shape, C_in)."""
  build.require()
  out = jax.ShapeDtypeStruct((dy.shape[0], *dgeo.out_shape, w.shape[-2]), dy.dtype)
  return jax.ffi.ffi_call("jaxseg_conv_input_grad", out, vmap_method="sequential")(dy, w, **_attrs(dgeo))


def input_grad(dy, w, geo: ConvGeometry):
  """dx by the forward kernel: for stride 1, the conv of dy with the flipped, channel-swapped
  kernel and the pads mirrored (k - 1 - lo before); for strides > 1, `strided_input_grad`."""
  if all(s == 1 for s in geo.stride):
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(geo.kernel, geo.pads))
    dgeo = geo._replace(in_shape=geo.out_shape, out_shape=geo.in_shape, pads=pads, cin=geo.cout, cout=geo.cin)
    return vary_like(flipped_forward(dy, w, dgeo), dy)
  return strided_input_grad(dy, w, geo)


def strided_input_grad(dy, w, geo: ConvGeometry):
  """dx of a strided conv by stride phases: one stride-1 conv of dy per phase, by the forward kernel.

  Input i (padded: i + lo = m*s + r) receives dy[o] w[t] from the taps
  t = a*s + r, a = m - o: phase r is the stride-1 correlation of dy with the
  sub-kernel w[r::s] flipped (channel axes swapped), padded q_r - 1 before, on
  m in [0, out + q - 1) (q = ceil(k / s), the most taps a phase has). The
  phases are interleaved and cropped to the input (`phase.assemble_phases`).
  No multiplication by the zeros of a stride-dilated cotangent.
  """
  n, out, s, nd = dy.shape[0], geo.out_shape, geo.stride, geo.nd
  q = phase.taps_per_phase(geo)
  m = tuple(o + qq - 1 for o, qq in zip(out, q))
  phases = []
  for r in itertools.product(*(range(sj) for sj in s)):
    sub = w[tuple(slice(rj, None, sj) for rj, sj in zip(r, s))]   # taps a*s + r: (*q_r, C_in, C_out)
    if 0 in sub.shape[:nd]:                                         # kernel smaller than the stride: no taps
      phases.append(jnp.zeros((n, *m, geo.cin), dy.dtype))
      continue
    pgeo = geo._replace(in_shape=out, out_shape=m, kernel=sub.shape[:nd], stride=(1,) * nd,
                        pads=tuple((qr - 1, mm - o) for qr, mm, o in zip(sub.shape[:nd], m, out)),
                        cin=geo.cout, cout=geo.cin)
    phases.append(vary_like(flipped_forward(dy, sub, pgeo), dy))   # sub flipped, (*q_r, C_out, C_in)
  return phase.assemble_phases(phases, geo)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, geo, min_dx_channels):
  return forward(x, w, geo)


def _conv_fwd(x, w, geo, min_dx_channels):
  return forward(x, w, geo), (x, w)


def _conv_bwd(geo, min_dx_channels, res, dy):
  x, w = res
  if geo.cin < min_dx_channels:   # one GEMM and an overlap-add: the kernel would fill few lanes
    dx = vary_like(phase.col2im_input_grad(dy, w, geo), x)
  else:
    dx = vary_like(input_grad(dy, w, geo), x)
  return dx, vary_like(weight_grad(x, dy, geo), w)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_geo(x, w, geo: ConvGeometry, *, min_dx_channels: int = MIN_DX_CHANNELS):
  """The conv of a `supports`-ed geometry on the kernels, differentiable (see the module doc)."""
  return _conv(*match_varying(x, w), geo, min_dx_channels)


def transpose_supports(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether `conv_transpose_geo` computes the transposed conv of `geo` (its forward geometry): a
  kernel equal to the stride in every dim (each output has one tap), no pads, an input of exactly
  stride x the output."""
  return (supports(geo, dtype) and tuple(geo.kernel) == tuple(geo.stride)
          and all(p == (0, 0) for p in geo.pads)
          and all(i == o * s for i, o, s in zip(geo.in_shape, geo.out_shape, geo.stride)))


def transpose_forward(y, w, geo: ConvGeometry):
  """z = conv_transpose(y, w) for a `transpose_supports` geometry, by the transposed-conv kernel:
  (N, *geo.out_shape, C_y) -> (N, *geo.in_shape, C_z), w (*k, C_z, C_y).

  The kernel takes w as one (C_y, k_last * C_z) matrix per leading phase, columns (c, o) padded to
  whole vectors: the outputs of one input pixel and phase are k_last * C_z contiguous floats.
  """
  build.require()
  nd, cz, cy = geo.nd, geo.cin, geo.cout
  wk = jnp.moveaxis(w, -1, nd - 1)                                 # (*k[:-1], C_y, k_last, C_z)
  wk = pad_columns(wk.reshape(prod(geo.kernel[:-1]), cy, geo.kernel[-1] * cz))
  out = jax.ShapeDtypeStruct((y.shape[0], *geo.in_shape, cz), y.dtype)
  z = jax.ffi.ffi_call("jaxseg_conv_transpose_forward", out, vmap_method="sequential")(y, wk, **_attrs(geo))
  return vary_like(z, y)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_transpose(y, w, geo):
  return transpose_forward(y, w, geo)


def _conv_transpose_fwd(y, w, geo):
  return transpose_forward(y, w, geo), (y, w)


def _conv_transpose_bwd(geo, res, g):
  # z = W^T y for the conv W of `geo`: dy = W g (the strided forward kernel), and dw is the forward
  # conv's weight gradient with g as its input and y as its cotangent.
  y, w = res
  return vary_like(forward(g, w, geo), y), vary_like(weight_grad(g, y, geo), w)


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def conv_transpose_geo(y, w, geo: ConvGeometry):
  """The transposed conv of a `transpose_supports` forward geometry on the kernels, differentiable."""
  return _conv_transpose(*match_varying(y, w), geo)


def conv(x, w, *, stride=1, padding="SAME", min_dx_channels: int = MIN_DX_CHANNELS):
  """2-D or 3-D conv of x (N, [D,] H, W, C_in) with w ([KD,] KH, KW, C_in, C_out) by the C++ kernels
  (float32).

  Same semantics as `jaxseg.ops.conv` (any stride, "SAME", "VALID" or explicit
  pads); differentiable (dW by the weight-gradient kernel, dx by the forward
  kernel). Raises ConfigError for what `supports` rejects and RuntimeError when
  the kernels are not available on this machine.
  """
  geo = conv_geometry(x.shape, w.shape, stride=stride, padding=padding, dilation=1, groups=1)
  if not supports(geo, x.dtype):
    raise ConfigError(f"cpu conv: only ungrouped, undilated 2-D or 3-D float32 convs (got x {x.shape} {x.dtype}, "
                      f"w {w.shape})")
  build.require()
  return conv_geo(x, w, geo, min_dx_channels=min_dx_channels)
