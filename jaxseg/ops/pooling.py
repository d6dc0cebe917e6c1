"""Max / average pooling (Keras MaxPool / AvgPool semantics, N-d, channels-last) and max-unpooling.

Why not just `lax.reduce_window`: on XLA:CPU the gradient of a reduce_window
max-pool is a `select_and_scatter`, which took half of the lab FCN's training
step. When the windows tile the (padded) input -- window == stride, the usual
2x2 / 2 -- `max_pool` instead reshapes to (N, o1, s1, o2, s2, .., C), takes the
max, and has a hand-written VJP that sends the cotangent to the first maximum
of each window (the element `lax`'s gradient picks), built from comparisons.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg.errors import ConfigError
from jaxseg.ops._common import as_tuple, resolve_padding


def _pool_geometry(x_shape, window, stride, padding):
  if len(x_shape) < 3 or len(x_shape) > 5:
    raise ConfigError(f"pooling input has shape {tuple(x_shape)}; expected (N, *spatial, C) with 1 to 3 spatial dims")
  nd = len(x_shape) - 2
  window = as_tuple(window, nd, "window")
  stride = window if stride is None else as_tuple(stride, nd, "stride")
  in_shape = tuple(x_shape[1:-1])
  pads = resolve_padding(padding, in_shape, window, stride)
  out = tuple((i + lo + hi - k) // s + 1 for i, (lo, hi), k, s in zip(in_shape, pads, window, stride))
  if any(o < 1 for o in out):
    raise ConfigError(f"pooling window {window} does not fit the input {tuple(x_shape)} with padding {padding!r}")
  return window, stride, pads, out


def _pad_crop_to_blocks(x, pads, out, window, fill):
  """Pad with `fill` and crop so each spatial dim is exactly out * window (window == stride)."""
  cfg = [(0, 0, 0)] + [(lo, o * k - i - lo, 0) for (lo, _), o, k, i in zip(pads, out, window, x.shape[1:-1])] \
      + [(0, 0, 0)]
  return lax.pad(x, jnp.array(fill, x.dtype), cfg)


def _blocks(x, window):
  """(N, o1*s1, .., C) -> (N, o1, s1, o2, s2, .., C)."""
  shape = [x.shape[0]]
  for size, k in zip(x.shape[1:-1], window):
    shape += [size // k, k]
  return x.reshape(shape + [x.shape[-1]])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _block_max(xb, window):
  nd = len(window)
  return _blocks(xb, window).max(axis=tuple(2 + 2 * j for j in range(nd)))


def _block_max_fwd(xb, window):
  y = _block_max(xb, window)
  return y, (xb, y)


def _block_max_bwd(window, res, g):
  xb, y = res
  nd = len(window)
  xr = _blocks(xb, window)
  # One-hot of the first maximum (row-major window order) of each window:
  # walk the taps in order, keep the first that equals the max.
  taken = jnp.zeros(y.shape, bool)
  parts = {}
  for tap in itertools.product(*(range(k) for k in window)):
    idx = (slice(None),) + tuple(v for t in tap for v in (slice(None), t)) + (slice(None),)
    hit = (xr[idx] == y) & ~taken
    taken = taken | hit
    parts[tap] = jnp.where(hit, g, jnp.zeros((), g.dtype))

  def build(prefix):
    j = len(prefix)
    if j == nd:
      return parts[prefix]
    # Stacking dim j (0-based) puts its window axis right after o_j.
    return jnp.stack([build(prefix + (t,)) for t in range(window[j])], axis=j + 2)

  gx = build(())
  return (gx.reshape(xb.shape),)


_block_max.defvjp(_block_max_fwd, _block_max_bwd)


POOL_IMPLS = ("xla", "pallas")


def max_pool(x, window, *, stride=None, padding="VALID", impl="xla"):
  """Max pooling (Keras MaxPool1D/2D/3D): windows, strides, SAME / VALID / (lo, hi) pads.

  Padding counts as -inf. stride defaults to window. With impl="xla", when
  window == stride a reshape + max with a hand-written VJP is used (fast on
  CPU); otherwise `lax.reduce_window`. impl="pallas" (2-D only) runs
  `kernels.pool.max_pool_pallas`. All give lax's gradient (the first maximum
  of a window gets the cotangent).
  """
  if impl not in POOL_IMPLS:
    raise ConfigError(f"unknown pooling impl {impl!r}; choose from {', '.join(POOL_IMPLS)}")
  if impl == "pallas":
    try:
      from kernels.pool import max_pool_pallas
    except ImportError as e:  # pragma: no cover - kernels ship with the package
      raise ConfigError(f"impl='pallas' needs the kernels package: {e}") from e
    if x.ndim != 4:
      raise ConfigError(f"impl='pallas' max pooling is 2-D only, got input rank {x.ndim}")
    return max_pool_pallas(x, window, stride=stride, padding=padding)
  window, stride, pads, out = _pool_geometry(x.shape, window, stride, padding)
  if window == stride:
    return _block_max(_pad_crop_to_blocks(x, pads, out, window, -jnp.inf), window)
  return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1,) + window + (1,),
                           (1,) + stride + (1,), [(0, 0)] + list(pads) + [(0, 0)])


def max_pool_lax(x, window, *, stride=None, padding="VALID"):
  """`max_pool` always through `lax.reduce_window` (for comparison and benchmarks)."""
  window, stride, pads, _ = _pool_geometry(x.shape, window, stride, padding)
  return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1,) + window + (1,),
                           (1,) + stride + (1,), [(0, 0)] + list(pads) + [(0, 0)])


def _real_counts(in_shape, window, stride, pads, out):
  """How many real (unpadded) elements each output window covers: a static NumPy array."""
  counts = np.ones((), np.float64)
  for i, k, s, (lo, _), o in zip(in_shape, window, stride, pads, out):
    start = np.arange(o) * s - lo
    c = np.minimum(start + k, i) - np.maximum(start, 0)
    counts = np.multiply.outer(counts, c)
  return counts[..., None]


def avg_pool(x, window, *, stride=None, padding="VALID"):
  """Average pooling (Keras AveragePooling): the mean over the real elements of each window.

  With SAME (or explicit) padding the padded zeros are not counted, as in Keras / TensorFlow.
  """
  window, stride, pads, out = _pool_geometry(x.shape, window, stride, padding)
  counts = jnp.asarray(_real_counts(x.shape[1:-1], window, stride, pads, out), x.dtype)
  if window == stride:
    xb = _blocks(_pad_crop_to_blocks(x, pads, out, window, 0.0), window)
    sums = xb.sum(axis=tuple(2 + 2 * j for j in range(len(window))))
  else:
    sums = lax.reduce_window(x, np.array(0, x.dtype), lax.add, (1,) + window + (1,), (1,) + stride + (1,),
                             [(0, 0)] + list(pads) + [(0, 0)])
  return sums / counts


def max_pool_with_argmax(x, window, *, stride=None, padding="VALID"):
  """Max pooling that also returns where each maximum came from.

  Returns:
    (y, indices): y as `max_pool`; indices (same shape, int32) is the flat
    row-major index into x's *spatial* dims (per image and channel) of the
    first maximum of each window, as `max_unpool` expects.
  """
  window, stride, pads, out = _pool_geometry(x.shape, window, stride, padding)
  nd = len(window)
  in_shape = x.shape[1:-1]
  xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
  taps = list(itertools.product(*(range(k) for k in window)))
  slices = []
  for tap in taps:
    limit = [t + (o - 1) * s + 1 for t, o, s in zip(tap, out, stride)]
    slices.append(lax.slice(xp, (0,) + tap + (0,), (x.shape[0],) + tuple(limit) + (x.shape[-1],),
                            (1,) + stride + (1,)))
  patches = jnp.stack(slices, axis=-2)                       # (N, *out, T, C)
  t_idx = jnp.argmax(patches, axis=-2)                       # first maximum
  y = jnp.take_along_axis(patches, t_idx[..., None, :], axis=-2)[..., 0, :]
  taps_arr = jnp.asarray(np.array(taps, np.int32).reshape(len(taps), nd))
  flat = jnp.zeros(t_idx.shape, jnp.int32)
  for j in range(nd):
    o_j = lax.broadcasted_iota(jnp.int32, t_idx.shape, 1 + j)
    coord = o_j * stride[j] + taps_arr[t_idx, j] - pads[j][0]
    flat = flat * in_shape[j] + coord
  return y, flat


def max_unpool(y, indices, output_shape):
  """Un-max-pooling: scatter each pooled value back to where its maximum came from, zeros elsewhere.

  Args:
    y: pooled values (N, *out, C).
    indices: from `max_pool_with_argmax` (flat spatial index per image and channel).
    output_shape: the spatial shape of the pooled input, e.g. x.shape[1:-1].

  Returns:
    (N, *output_shape, C). Where overlapping windows share a maximum, the
    value is written once (set, not added).
  """
  output_shape = tuple(output_shape)
  if y.shape != indices.shape:
    raise ConfigError(f"max_unpool: values {y.shape} and indices {indices.shape} differ in shape")
  n, c = y.shape[0], y.shape[-1]
  p = int(np.prod(output_shape))
  yf = y.reshape(n, -1, c)
  idx = indices.reshape(n, -1, c)
  n_idx = lax.broadcasted_iota(jnp.int32, idx.shape, 0)
  c_idx = lax.broadcasted_iota(jnp.int32, idx.shape, 2)
  out = jnp.zeros((n, p, c), y.dtype).at[n_idx, idx, c_idx].set(yf)
  return out.reshape((n,) + output_shape + (c,))
