"""3x3x3 stride-1 3-D convs as Winograd F(2x2, 3x3) over the in-plane taps, the depth taps summed
directly, on the C++ kernels of `jaxseg.ops.cpu`.

Each depth plane is cut into 4x4 input tiles at stride 2 (2x2 output pixels
each); a tile's in-plane 3x3 conv is Y = A^T [(G g G^T) . (B^T d B)] A with 16
multiplications per (input, output) channel pair instead of 4 * 9 = 36 (Lavin
& Gray 2016, points 0, +-1, infinity). The three depth taps are a direct sum:
for each of the 16 tile positions p,

    M[p, z] = V[p, z-1] @ U[p, 0] + V[p, z] @ U[p, 1] + V[p, z+1] @ U[p, 2],

a (3, 1, 1) conv over the position's planes of transformed tiles, with a
plane of zeros before and after each volume, which the C++ direct conv kernels
run with no pads. Two forms compute it:

- `conv3x3x3` (route "winograd3d"), fused: one call transforms a band of a
  few tile rows of one volume into a buffer that stays in L2, runs its 16
  depth convs there and writes its output tiles (the backward likewise,
  recomputing the band's V). No transformed volume is ever in memory.
- `conv3x3x3_composed` (route "winograd3d_products"): separate calls, each
  inspectable (`input_tiles`, `transform_kernel`, `product`, `output_tiles`
  and their transposes); V of the whole batch (4 times the input) is kept
  between them, and each position's product runs over the whole batch. On the
  deepest layers the kernel outweighs the data, and there this form, which
  reads each position's kernel once, is the faster; on larger volumes writing
  and reading V lost more than the saving (experiments/bench/RESULTS.md,
  session 11).

Session 9 stored the three planes side by side for one GEMM over 3 * C_in (12
times the input), which lost to the direct kernels on all but the smallest
volumes.

2.25x fewer multiplications than the direct sum. F(2x2, 3x3) and not F(4x4, 3x3)
(4x fewer) because the kernel is the large operand of a deep 3-D layer: U
holds 16 / 9 of the kernel's numbers (36 / 9 for F(4x4)), and at 4x8x8 planes
with 128 channels there is 16 times more kernel than input; the F(4x4)
prototype was slower than the direct kernels there (experiments/bench/RESULTS.md,
session 9). All transforms are C++ (`_cpu_conv.cc`): the tiles' (as jnp slices
and sums they took longer than the products) and the kernel's (U, U^T per
position for the input gradient, and the weight gradient's G^T dU G).

The gradients: dM is the transposed output transform of dy (depth-padded as
V); dV = the depth conv of dM with U's depth taps flipped and its channel axes
swapped, dx its transposed tile transform; dU = the depth conv's weight
gradient from V and dM, dW = G^T dU G. The transforms scale by 1/2 and 2 only:
errors of about 1e-6 relative to the output's scale, as the direct sum's.

Which layers run here is `jaxseg.ops.auto`'s rule (`ConvPolicy.winograd_3d*`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.ops._common import ConvGeometry
from jaxseg.ops.cpu import build, direct
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
  """The input gradient's depth kernels, (16, 3 * C_out, C_in') with zero columns: ut[p, 2 - kz, o, c] =
  U[p, kz, c, o] (depth taps flipped, channel axes swapped)."""
  ci, co = w.shape[3:]
  return _kernel_call(w, (16, 3 * co, _pad16(ci)), 1)


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


def _rows(shape, extra=0):
  n, d, h, w = shape[:4]
  th, tw = _tiles(h, w)
  return n * (d + extra) * th * tw


def input_tiles(x):
  """(16, N*(D+2)*T, C): B^T d B of every 4x4 tile (stride 2, SAME pads) of every plane of x
  (N, D, H, W, C), row (n, z + 1, tile) for plane z; planes 0 and D + 1 of each volume are zeros."""
  return _transform(x, (16, _rows(x.shape, 2), x.shape[-1]), 0)


def input_tiles_t(dv, x_shape):
  """B dV B^T of every tile of dv (16, N*D*T, C) (unpadded), added into a volume of x_shape: the
  transpose of `input_tiles` restricted to the planes of the volume."""
  return _transform(dv, x_shape, 1)


def output_tiles(m, y_shape):
  """A^T m A of every tile of m (16, N*D*T, C_out): y of y_shape (N, D, H, W, C_out), cropped."""
  return _transform(m, y_shape, 2)


def output_tiles_t(dy):
  """The transpose of `output_tiles`: A dY A^T of every 2x2 block of dy (zeros past its edge), depth-padded
  as `input_tiles`: (16, N*(D+2)*T, C_out)."""
  return _transform(dy, (16, _rows(dy.shape, 2), dy.shape[-1]), 3)


def product(a, b, out_shape, n, d, kind):
  """The depth conv of each tile position on the C++ kernels: kind 0 M = V * U, kind 1 dV = dM * ut, kind 2
  dU from V and dM (see `_cpu_conv.cc`, Wino3Product); n volumes of d planes."""
  build.require()
  out = jax.ShapeDtypeStruct(tuple(out_shape), a.dtype)
  return jax.ffi.ffi_call("jaxseg_winograd3d_product", out, vmap_method="sequential")(
      a, b, n=np.int64(n), d=np.int64(d), kind=np.int64(kind))


# The fused conv's bands: tile rows whose transformed input takes at most about this many bytes (at
# least one row), so that a band's tiles stay in L2 while its 16 depth convs run.
BAND_BYTES = 512 << 10


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3x3(x, w, band_bytes=BAND_BYTES):
  """3x3x3 SAME stride-1 conv of x (N, D, H, W, C_in) with w (3, 3, 3, C_in, C_out) (float32, CPU,
  kernels available), fused: the tile transforms and the depth convs in one call, band by band of
  tile rows (`_cpu_conv.cc`, Wino3ConvForward / Wino3ConvBackward), so the transformed tiles of the
  whole volume are never in memory. The route's form."""
  return _fused_fwd(x, w, band_bytes)[0]


def _fused_fwd(x, w, band_bytes):
  build.require()
  u = transform_kernel(w)
  out = jax.ShapeDtypeStruct((*x.shape[:4], w.shape[-1]), x.dtype)
  y = jax.ffi.ffi_call("jaxseg_winograd3d_conv_forward", out, vmap_method="sequential")(
      x, u, band_bytes=np.int64(band_bytes))
  return vary_like(y, x), (x, w)


def _fused_bwd(band_bytes, res, dy):
  x, w = res
  ci, co = w.shape[3:]
  outs = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((16, 3 * ci, co), x.dtype))
  dx, du = jax.ffi.ffi_call("jaxseg_winograd3d_conv_backward", outs, vmap_method="sequential")(
      x, dy, transform_kernel_tt(w), band_bytes=np.int64(band_bytes))
  return vary_like(dx, x), vary_like(transform_kernel_t(du), w)


conv3x3x3.defvjp(_fused_fwd, _fused_bwd)


@jax.custom_vjp
def conv3x3x3_composed(x, w):
  """The same conv composed of the separately callable pieces (`input_tiles`, `transform_kernel`,
  `product`, `output_tiles` and their transposes), each a custom call whose result can be looked
  at; the transformed tiles of the whole volume are kept between the calls."""
  return _fwd(x, w)[0]


def _fwd(x, w):
  n, d = x.shape[:2]
  ci, co = w.shape[3:]
  v = input_tiles(x)
  m = product(v, transform_kernel(w), (16, _rows(x.shape), co), n, d, 0)
  y = output_tiles(m, (*x.shape[:4], co))
  return vary_like(y, x), (x, w, v)


def _bwd(res, dy):
  x, w, v = res
  n, d = x.shape[:2]
  ci, co = w.shape[3:]
  dm = output_tiles_t(dy)
  dx = input_tiles_t(product(dm, transform_kernel_tt(w), (16, _rows(x.shape), ci), n, d, 1), x.shape)
  dw = transform_kernel_t(product(v, dm, (16, 3 * ci, co), n, d, 2))
  return vary_like(dx, x), vary_like(dw, w)


conv3x3x3_composed.defvjp(_fwd, _bwd)


def supports(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether this conv can run here: what the direct kernels support, 3-D, a 3x3x3 kernel, stride 1,
  one pixel of padding on every side (SAME)."""
  return (geo.nd == 3 and direct.supports(geo, dtype) and tuple(geo.kernel) == (3, 3, 3)
          and all(s == 1 for s in geo.stride) and all(p == (1, 1) for p in geo.pads))


def conv_geo(x, w, geo: ConvGeometry, fused: bool = True):
  """The conv of a `supports`-ed geometry by Winograd F(2x2, 3x3) in-plane, depth taps direct: fused
  (`conv3x3x3`) or composed of the pieces (`conv3x3x3_composed`)."""
  build.require()
  return (conv3x3x3 if fused else conv3x3x3_composed)(*match_varying(x, w))
