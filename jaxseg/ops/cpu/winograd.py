"""Winograd convolution F(4x4, 3x3) on the CPU, by the C++ kernels of `jaxseg.ops.cpu`.

A 3x3 stride-1 conv computes each 4x4 block of output pixels from a 6x6 input
tile with 36 multiplications per (input, output) channel pair instead of
16 * 9 = 144 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016; points 0, +-1, +-2, infinity):

    Y = A^T [ (G g G^T) . (B^T d B) ] A

g the 3x3 kernel, d the tile, `.` elementwise; summed over input channels the
product is 36 matrix products (tiles x C_in) @ (C_in x C_out). Stride-2 convs
with 5x5 or 6x6 kernels become 3x3 stride-1 convs of the space-to-depth
input (2x2 pixel blocks as 4 C_in channels, the kernel cut into 2x2 blocks):
2.8x fewer multiplications than the direct sum for 5x5/2.

The gradients are the transposes: dx = B-transpose of (dM @ U^T) (tiles added
where they overlap), dW = G^T (V^T @ dM) G, dM the A-transpose of dy. The
rounding differs from the direct sum (the transforms scale by up to 8 and
1/24): errors of 1e-6 to 1e-5 relative to the output's scale (more input channels, more
error), which the tests bound.

Which layers run here is `jaxseg.ops.auto`'s rule (`ConvPolicy.winograd*`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.ops.cpu import build, direct
from jaxseg.ops._common import ConvGeometry
from jaxseg.ops.sharding import match_varying, vary_like

# y = A^T m A, v = B^T d B, u = G g G^T (the kernels in _cpu_conv.cc hold the same numbers)
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)

GG = np.kron(G, G)          # (36, 9): u[6a + b] = sum_ij G[a, i] G[b, j] g[3i + j]


def transform_kernel(w, pad_to=1):
  """u = G g G^T of a (3, 3, C_in, C_out) kernel, as (36, C_in, C_out'), C_out' the next multiple
  of pad_to (zero columns): one (36, 9) @ (9, C_in * C_out') product."""
  w = direct.pad_columns(w, pad_to)
  c, kp = w.shape[2:]
  return (jnp.asarray(GG, w.dtype) @ w.reshape(9, c * kp)).reshape(36, c, kp)


def transform_kernel_t(du):
  """The transpose of `transform_kernel` (unpadded): (36, C_in, C_out) -> (3, 3, C_in, C_out)."""
  c, k = du.shape[1:]
  return (jnp.asarray(GG.T, du.dtype) @ du.reshape(36, c * k)).reshape(3, 3, c, k)


def _transform(a, out_shape, th, tw, ph, pw, kind):
  build.require()
  out = jax.ShapeDtypeStruct(out_shape, a.dtype)
  return jax.ffi.ffi_call("jaxseg_winograd_transform", out, vmap_method="sequential")(
      a, th=np.int64(th), tw=np.int64(tw), ph=np.int64(ph), pw=np.int64(pw), kind=np.int64(kind))


def input_tiles(x, th, tw, ph, pw):
  """B^T d B of every 6x6 tile of x (N, H, W, C) (tile (i, j) at rows 4i - ph.., columns 4j - pw..): (36, N*th*tw, C)."""
  return _transform(x, (36, x.shape[0] * th * tw, x.shape[-1]), th, tw, ph, pw, 0)


def input_tiles_t(v, x_shape, th, tw, ph, pw):
  """The transpose of `input_tiles`: B dv B^T of every tile, added into an image of x_shape."""
  return _transform(v, tuple(x_shape), th, tw, ph, pw, 1)


def output_tiles(m, y_shape, th, tw):
  """A^T m A of every tile, written as 4x4 output pixels into an image of y_shape (cropped)."""
  return _transform(m, tuple(y_shape), th, tw, 0, 0, 2)


def output_tiles_t(dy, th, tw):
  """The transpose of `output_tiles`: A dY A^T of every 4x4 block of dy (zeros past its edge)."""
  return _transform(dy, (36, dy.shape[0] * th * tw, dy.shape[-1]), th, tw, 0, 0, 3)


def bmm(a, b, k=None):
  """(B, P, C) @ (B, C, K') -> (B, P, K), by the conv kernel as a 1x1 conv; K' a multiple of 16
  (b padded with zero columns if not), K = k or K'."""
  build.require()
  k = b.shape[-1] if k is None else k
  b = direct.pad_columns(b)
  out = jax.ShapeDtypeStruct((*a.shape[:2], k), a.dtype)
  return jax.ffi.ffi_call("jaxseg_batched_matmul", out, vmap_method="sequential")(a, b)


def bmm_tn(a, g):
  """(B, P, C)^T @ (B, P, K) -> (B, C, K), by the weight-gradient kernel."""
  build.require()
  out = jax.ShapeDtypeStruct((a.shape[0], a.shape[2], g.shape[2]), a.dtype)
  return jax.ffi.ffi_call("jaxseg_batched_matmul_tn", out, vmap_method="sequential")(a, g)


def _tiles(out_hw):
  return -(-out_hw[0] // 4), -(-out_hw[1] // 4)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x, w, pads_before, out_hw):
  """3x3 stride-1 conv of x (N, H, W, C_in) with w (3, 3, C_in, C_out); output pixel (i, j) at
  input (i - ph, j - pw) (zeros outside), output out_hw. float32, CPU, kernels available."""
  return _conv3x3_fwd(x, w, pads_before, out_hw)[0]


def _conv3x3_fwd(x, w, pads_before, out_hw):
  th, tw = _tiles(out_hw)
  v = input_tiles(x, th, tw, *pads_before)
  y = output_tiles(bmm(v, transform_kernel(w, direct.VECTOR), w.shape[-1]), (x.shape[0], *out_hw, w.shape[-1]), th, tw)
  return vary_like(y, x), (x, w, v)


def _conv3x3_bwd(pads_before, out_hw, res, dy):
  x, w, v = res
  th, tw = _tiles(out_hw)
  dm = output_tiles_t(dy, th, tw)
  # U^T from the channel-swapped kernel (a quarter of U's size to move)
  ut = transform_kernel(jnp.swapaxes(w, 2, 3), direct.VECTOR)
  dx = input_tiles_t(bmm(dm, ut, x.shape[-1]), x.shape, th, tw, *pads_before)
  dw = transform_kernel_t(bmm_tn(v, dm))
  return vary_like(dx, x), vary_like(dw, w)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def supports(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether this conv can run as F(4x4, 3x3): what the direct kernels support, square strides
  1 or 2, and 3 taps a dim after space-to-depth (3x3/1; 5x5/2, 6x6/2)."""
  if (geo.nd != 2 or not direct.supports(geo, dtype) or len(set(geo.stride)) != 1
      or geo.stride[0] not in (1, 2)):
    return False
  s = geo.stride[0]
  return all(-(-k // s) == 3 for k in geo.kernel)


def conv_geo(x, w, geo: ConvGeometry):
  """The conv of a `supports`-ed geometry by Winograd F(4x4, 3x3) (stride 2 by space-to-depth)."""
  build.require()
  x, w = match_varying(x, w)
  (plo, _), (qlo, _) = geo.pads
  if geo.stride[0] == 1:
    return conv3x3(x, w, (plo, qlo), tuple(geo.out_shape))
  n, (h, wd), c, (oh, ow) = x.shape[0], geo.in_shape, geo.cin, geo.out_shape
  hp, wp = 2 * (oh + 2), 2 * (ow + 2)        # padded input the 3-tap blocks cover, even
  xp = jnp.pad(x, ((0, 0), (plo, max(hp - h - plo, 0)), (qlo, max(wp - wd - qlo, 0)), (0, 0)))[:, :hp, :wp]
  xs = xp.reshape(n, oh + 2, 2, ow + 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, oh + 2, ow + 2, 4 * c)
  kh, kw = geo.kernel
  wp6 = jnp.pad(w, ((0, 6 - kh), (0, 6 - kw), (0, 0), (0, 0)))
  ws = wp6.reshape(3, 2, 3, 2, c, geo.cout).transpose(0, 2, 1, 3, 4, 5).reshape(3, 3, 4 * c, geo.cout)
  return conv3x3(xs, ws, (0, 0), (oh, ow))
