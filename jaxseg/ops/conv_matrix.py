"""Convolution as an explicit sparse matrix: y = W x, and the transposed conv is W^T.

A conv with kernel w, over a single image flattened row-major (spatial dims
first, then channels), is the matrix

    W = sum over taps t of  S_t (x) w[t]

where S_t (prod(out) x prod(in)) has a single 1 per row: output pixel o reads
input pixel o*stride + t*dilation - pad_lo (or nothing, in the zero padding),
and w[t] is the dense C_in x C_out block of tap t (block-diagonal over groups).

`conv_matrix` materialises W as a BCOO matrix (fine for teaching-sized inputs);
`conv_matrix_apply` / `conv_transpose_matrix_apply` keep the factored form: one
sparse matrix holding every S_t stacked, times the batch, then the dense blocks.
That runs real layers (a 256x256 image with a 5x5 kernel has 25 * 65536 / 4
non-zeros in the stacked S at stride 2).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from jaxseg.ops._common import ConvGeometry, conv_geometry, prod


@functools.lru_cache(maxsize=64)
def _selection_indices(geo: ConvGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tap, out_flat, in_flat) of every non-zero of the stacked S_t."""
  taps, outs, ins = [], [], []
  out_grid = np.indices(geo.out_shape).reshape(geo.nd, -1)     # (nd, P_out)
  out_flat = np.arange(out_grid.shape[1])
  for t_idx, tap in enumerate(geo.taps):
    pos = [out_grid[j] * geo.stride[j] + tap[j] * geo.dilation[j] - geo.pads[j][0] for j in range(geo.nd)]
    ok = np.ones(out_flat.shape, bool)
    for j in range(geo.nd):
      ok &= (pos[j] >= 0) & (pos[j] < geo.in_shape[j])
    in_flat = np.ravel_multi_index([p[ok] for p in pos], geo.in_shape) if ok.any() else np.zeros(0, int)
    taps.append(np.full(int(ok.sum()), t_idx))
    outs.append(out_flat[ok])
    ins.append(in_flat)
  return (np.concatenate(taps).astype(np.int32), np.concatenate(outs).astype(np.int32),
          np.concatenate(ins).astype(np.int32))


def selection_matrix(geo: ConvGeometry, dtype=jnp.float32) -> sparse.BCOO:
  """All S_t stacked: a BCOO of shape (taps * prod(out), prod(in)), row t*prod(out) + o."""
  t, o, i = _selection_indices(geo)
  p_out, p_in = prod(geo.out_shape), prod(geo.in_shape)
  rows = t.astype(np.int64) * p_out + o
  idx = np.stack([rows, i], axis=1).astype(np.int32)
  return sparse.BCOO((jnp.ones(len(idx), dtype), jnp.asarray(idx)),
                     shape=(len(geo.taps) * p_out, p_in), indices_sorted=True, unique_indices=True)


def _block_weights(w, geo: ConvGeometry):
  """w (*k, Cin//g, Cout) -> (taps, g, Cin//g, Cout//g)."""
  g = geo.groups
  return w.reshape(len(geo.taps), geo.cin // g, g, geo.cout // g).transpose(0, 2, 1, 3)


def conv_matrix_apply(x, w, geo: ConvGeometry):
  """conv(x, w) in the factored form: sum_t S_t @ X @ w[t]."""
  n, g = x.shape[0], geo.groups
  p_in, p_out = prod(geo.in_shape), prod(geo.out_shape)
  s = selection_matrix(geo, x.dtype)
  x_cols = x.reshape(n, p_in, geo.cin).transpose(1, 0, 2).reshape(p_in, n * geo.cin)
  shifted = (s @ x_cols).reshape(len(geo.taps), p_out, n, g, geo.cin // g)
  y = jnp.einsum("tpngc,tgco->npgo", shifted, _block_weights(w, geo))
  return y.reshape((n,) + geo.out_shape + (geo.cout,))


def conv_transpose_matrix_apply(y, w, geo: ConvGeometry):
  """The adjoint of `conv_matrix_apply` in x: sum_t S_t^T @ Y @ w[t]^T."""
  n, g = y.shape[0], geo.groups
  p_in, p_out = prod(geo.in_shape), prod(geo.out_shape)
  s = selection_matrix(geo, y.dtype)
  y_blocks = y.reshape(n, p_out, g, geo.cout // g)
  z = jnp.einsum("npgo,tgco->tpngc", y_blocks, _block_weights(w, geo))
  x_cols = s.T @ z.reshape(len(geo.taps) * p_out, n * geo.cin)
  return x_cols.reshape(p_in, n, geo.cin).transpose(1, 0, 2).reshape((n,) + geo.in_shape + (geo.cin,))


def conv_matrix(w, input_shape, *, stride=1, padding="SAME", dilation=1, groups=1) -> sparse.BCOO:
  """The convolution of one image as a BCOO matrix of shape (prod(out)*C_out, prod(in)*C_in).

  Args:
    w: kernel (*kernel, C_in // groups, C_out), as for `conv`.
    input_shape: the spatial dims of one input image followed by its channel
      count, e.g. (H, W, C_in) -- no batch dim.
    stride, padding, dilation, groups: as for `conv`.

  Returns:
    A BCOO matrix M such that `M @ x.reshape(-1)` equals
    `conv(x[None], w, ...).reshape(-1)` for x of shape `input_shape`
    (flattened row-major: spatial dims, then channel). `M.T @ y.reshape(-1)`
    is the transposed convolution (`jax.linear_transpose` of `conv`).
    The non-zero values are taken from `w`, so M is differentiable in w.

  Example:
    >>> m = conv_matrix(jnp.ones((3, 3, 1, 1)), (5, 5, 1), padding="VALID")
    >>> m.shape
    (9, 25)
  """
  input_shape = tuple(input_shape)
  geo = conv_geometry((1,) + input_shape, w.shape, stride=stride, padding=padding,
                      dilation=dilation, groups=groups)
  t, o, i = _selection_indices(geo)
  g, cg, og = groups, geo.cin // groups, geo.cout // groups
  # Each (tap, out pixel, in pixel) triple expands into the dense block of its
  # tap: C_in//g x C_out//g entries per group.
  gi, ci, oi = (a.reshape(-1) for a in np.meshgrid(np.arange(g), np.arange(cg), np.arange(og), indexing="ij"))
  rows = (o[:, None].astype(np.int64) * geo.cout + (gi * og + oi)[None, :]).reshape(-1)
  cols = (i[:, None].astype(np.int64) * geo.cin + (gi * cg + ci)[None, :]).reshape(-1)
  w_idx = (t[:, None].astype(np.int64) * (cg * geo.cout) + (ci * geo.cout + gi * og + oi)[None, :]).reshape(-1)
  data = jnp.take(w.reshape(-1), jnp.asarray(w_idx, jnp.int32))
  idx = jnp.asarray(np.stack([rows, cols], axis=1).astype(np.int32))
  shape = (prod(geo.out_shape) * geo.cout, prod(geo.in_shape) * geo.cin)
  return sparse.BCOO((data, idx), shape=shape, unique_indices=True)


# Keep the names the public module re-exports in one place.
__all__ = ["conv_matrix", "selection_matrix", "conv_matrix_apply", "conv_transpose_matrix_apply"]
