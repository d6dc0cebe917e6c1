"""3x3x3 stride-1 3-D convs as Winograd F(2x2, 3x3) over the in-plane taps, the depth taps summed
directly, on the C++ kernels of `jaxseg.ops.cpu`.

Each depth plane is cut into 4x4 input tiles at stride 2 (2x2 output pixels
each); a tile's in-plane 3x3 conv is Y = A^T [(G g G^T) . (B^T d B)] A with 16
multiplications per (input, output) channel pair instead of 4 * 9 = 36 (Lavin
& Gray 2016, points 0, +-1, infinity). The three depth taps are a direct sum:
output plane z takes the transformed tiles of input planes z-1, z, z+1 side by
side, so each of the 16 positions is one matrix product over 3 * C_in
(`winograd.bmm`):

    M[p] = [V[p, z-1] V[p, z] V[p, z+1]] @ [U[p, 0]; U[p, 1]; U[p, 2]]

2.25x fewer multiplications than the direct sum. F(2x2, 3x3) and not F(4x4, 3x3)
(4x fewer) because the kernel is the large operand of a deep 3-D layer: U
holds 16 / 9 of the kernel's numbers (36 / 9 for F(4x4)), and at 4x8x8 planes
with 128 channels there is 16 times more kernel than input; the F(4x4)
prototype was slower than the direct kernels there (experiments/bench/RESULTS.md,
session 9). All transforms are C++ (`_cpu_conv.cc`): the tiles' (as jnp slices
and sums they took longer than the products) and the kernel's (U, U^T per
position for the input gradient, and the weight gradient's G^T dU G).

The gradients: dx = the transposed tile transform of dM @ U^T, dW = G^T (V^T dM) G,
dM the transposed output transform of dy. The transforms scale by 1/2 and 2
only: errors of about 1e-6 relative to the output's scale, as the direct sum's.

Which layers run here is `jaxseg.ops.auto`'s rule (`ConvPolicy.winograd_3d*`):
the deep layers, where the kernel is large next to the data; on larger volumes
the transformed tiles (12 times the input: 16 numbers per 4 pixels, three
depth taps side by side) outweigh the saving.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.ops._common import ConvGeometry
from jaxseg.ops.cpu import build, direct
from jaxseg.ops.cpu import winograd as wg
from jaxseg.ops.sharding import match_varying, vary_like

# y = A^T m A, v = B^T d B, u = G g G^T (_cpu_conv.cc's g4/gt3 hold G)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def _kernel_call(a, out_shape, kind):
  build.require()
  out = jax.ShapeDtypeStruct(out_shape, a.dtype)
  return jax.ffi.ffi_call("jaxseg_winograd3d_kernel", out, vmap_method="sequential")(a, kind=np.int64(kind))


def _pad16(n):
  return -(-n // 16) * 16


def transform_kernel(w):
  """U (16, 3 * C_in, C_out') of w (3, 3, 3, C_in, C_out): u[4a + b, kz * C_in + c] = (G w[kz, :, :, c] G^T)[a, b];
  C_out' the next multiple of 16 (zero columns)."""
  ci, co = w.shape[3:]
  return _kernel_call(w, (16, 3 * ci, _pad16(co)), 0)


def transform_kernel_tt(w):
  """U^T per position, (16, C_out, (3 * C_in)') with zero columns: the input gradient's operand."""
  ci, co = w.shape[3:]
  return _kernel_call(w, (16, co, _pad16(3 * ci)), 1)


def transform_kernel_t(du):
  """The transpose of `transform_kernel` (unpadded): (16, 3 * C_in, C_out) -> (3, 3, 3, C_in, C_out)."""
  _, rows, co = du.shape
  return _kernel_call(du, (3, 3, 3, rows // 3, co), 2)


def _tiles(h, w):
  return -(-h // 2), -(-w // 2)


def _transform(a, out_shape, kind):
  build.require()
  out = jax.ShapeDtypeStruct(tuple(out_shape), a.dtype)
  return jax.ffi.ffi_call("jaxseg_winograd3d_transform", out, vmap_method="sequential")(a, kind=np.int64(kind))


def _rows(shape):
  n, d, h, w = shape[:4]
  th, tw = _tiles(h, w)
  return n * d * th * tw


def input_tiles(x):
  """(16, N*D*T, 3*C): B^T d B of every 4x4 tile (stride 2, SAME pads) of every plane of x
  (N, D, H, W, C); row (n, z, tile) holds the tiles of planes z-1, z, z+1 (zeros outside) side by side."""
  return _transform(x, (16, _rows(x.shape), 3 * x.shape[-1]), 0)


def input_tiles_t(dv, x_shape):
  """The transpose of `input_tiles`: B dV B^T of every tile, added into a volume of x_shape."""
  return _transform(dv, x_shape, 1)


def output_tiles(m, y_shape):
  """A^T m A of every tile of m (16, N*D*T, C_out): y of y_shape (N, D, H, W, C_out), cropped."""
  return _transform(m, y_shape, 2)


def output_tiles_t(dy):
  """The transpose of `output_tiles`: A dY A^T of every 2x2 block of dy (zeros past its edge)."""
  return _transform(dy, (16, _rows(dy.shape), dy.shape[-1]), 3)


@jax.custom_vjp
def conv3x3x3(x, w):
  """3x3x3 SAME stride-1 conv of x (N, D, H, W, C_in) with w (3, 3, 3, C_in, C_out) (float32, CPU,
  kernels available)."""
  return _fwd(x, w)[0]


def _fwd(x, w):
  v = input_tiles(x)
  m = wg.bmm(v, transform_kernel(w), w.shape[-1])
  y = output_tiles(m, (*x.shape[:4], w.shape[-1]))
  return vary_like(y, x), (x, w, v)


def _bwd(res, dy):
  x, w, v = res
  dm = output_tiles_t(dy)
  dx = input_tiles_t(wg.bmm(dm, transform_kernel_tt(w), v.shape[-1]), x.shape)
  dw = transform_kernel_t(wg.bmm_tn(v, dm))
  return vary_like(dx, x), vary_like(dw, w)


conv3x3x3.defvjp(_fwd, _bwd)


def supports(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether this conv can run here: what the direct kernels support, 3-D, a 3x3x3 kernel, stride 1,
  one pixel of padding on every side (SAME)."""
  return (geo.nd == 3 and direct.supports(geo, dtype) and tuple(geo.kernel) == (3, 3, 3)
          and all(s == 1 for s in geo.stride) and all(p == (1, 1) for p in geo.pads))


def conv_geo(x, w, geo: ConvGeometry):
  """The conv of a `supports`-ed geometry by Winograd F(2x2, 3x3) in-plane, depth taps direct."""
  build.require()
  return conv3x3x3(*match_varying(x, w))
