"""Plain NumPy loops: the oracle every op is tested against. Obviously right, never fast.

Written independently of `jaxseg.ops` (no shared helpers), one output pixel
and one kernel tap at a time, so a bug in the ops' geometry cannot hide in
both. Layout channels-last: x (N, *spatial, C).
"""

from __future__ import annotations

import itertools

import numpy as np


def _per_dim(v, nd):
  return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _pads(padding, in_shape, window, stride):
  """TensorFlow padding: SAME gives out = ceil(in / s), the odd extra pad goes after."""
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return [(0, 0)] * len(in_shape)
    pads = []
    for i, k, s in zip(in_shape, window, stride):
      out = -(-i // s)
      total = max((out - 1) * s + k - i, 0)
      pads.append((total // 2, total - total // 2))
    return pads
  return [tuple(p) for p in padding]


def conv(x, w, *, stride=1, padding="SAME", dilation=1, groups=1):
  """Cross-correlation with w (*k, C_in // groups, C_out), as lax.conv_general_dilated."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  nd = x.ndim - 2
  stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
  kernel = w.shape[:nd]
  k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
  in_shape = x.shape[1:-1]
  pads = _pads(padding, in_shape, k_eff, stride)
  out_shape = [(i + lo + hi - k) // s + 1 for i, (lo, hi), k, s in zip(in_shape, pads, k_eff, stride)]
  cin, cout = x.shape[-1], w.shape[-1]
  cg, og = cin // groups, cout // groups
  y = np.zeros((x.shape[0], *out_shape, cout))
  for o in itertools.product(*(range(n) for n in out_shape)):
    for t in itertools.product(*(range(k) for k in kernel)):
      pos = [oj * s + tj * d - lo for oj, tj, s, d, (lo, _) in zip(o, t, stride, dilation, pads)]
      if any(p < 0 or p >= i for p, i in zip(pos, in_shape)):
        continue  # zero padding
      for g in range(groups):
        xin = x[(slice(None), *pos, slice(g * cg, (g + 1) * cg))]          # (N, cg)
        y[(slice(None), *o, slice(g * og, (g + 1) * og))] += xin @ w[(*t, slice(None), slice(g * og, (g + 1) * og))]
  return y


def deconv_output_length(n, k, padding, stride, dilation=1, output_padding=None):
  """Keras' formula (keras/src/utils/conv_utils.py), one dim; padding may also be a (lo, hi) pair."""
  k = k + (k - 1) * (dilation - 1)
  if not isinstance(padding, str):
    lo, hi = padding
    return (n - 1) * stride + k - lo - hi + (output_padding or 0)
  padding = padding.lower()
  if output_padding is None:
    if padding == "valid":
      return n * stride + max(k - stride, 0)
    return n * stride
  pad = k // 2 if padding == "same" else 0
  return (n - 1) * stride + k - 2 * pad + output_padding


def conv_transpose(y, w, *, stride=1, padding="SAME", output_padding=None, dilation=1):
  """Scatter each input pixel's w[t] @ y[o] to position o*s + t*d - pad_lo; w (*k, C_out, C_in)."""
  y, w = np.asarray(y, np.float64), np.asarray(w, np.float64)
  nd = y.ndim - 2
  stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
  opad = _per_dim(output_padding, nd)
  kernel = w.shape[:nd]
  k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
  n_shape = y.shape[1:-1]
  per_dim = [padding] * nd if isinstance(padding, str) else [tuple(p) for p in padding]
  x_shape = [deconv_output_length(n, k, p, s, d, op)
             for n, k, p, s, d, op in zip(n_shape, kernel, per_dim, stride, dilation, opad)]
  pads = _pads(padding, x_shape, k_eff, stride)
  if isinstance(padding, str) and padding.upper() == "SAME" and output_padding is not None:
    # Keras (keras/src/backend/jax/nn.py): the stride-dilated input is padded on the
    # left by min(ceil(pad_len / 2), k_eff - 1), pad_len = k_eff + k_eff % 2 - 2 + output_padding,
    # so output pixel 0 sits at k_eff - 1 - left in the scatter's coordinates.
    pads = []
    for k, op in zip(k_eff, opad):
      pad_len = k + k % 2 - 2 + op
      pads.append((k - 1 - min(pad_len // 2 + pad_len % 2, k - 1), None))
  x = np.zeros((y.shape[0], *x_shape, w.shape[-2]))
  for o in itertools.product(*(range(n) for n in n_shape)):
    for t in itertools.product(*(range(k) for k in kernel)):
      pos = [oj * s + tj * d - lo for oj, tj, s, d, (lo, _) in zip(o, t, stride, dilation, pads)]
      if any(p < 0 or p >= i for p, i in zip(pos, x_shape)):
        continue
      x[(slice(None), *pos, slice(None))] += y[(slice(None), *o, slice(None))] @ w[t].T
  return x


def _pool(x, window, stride, padding, reduce_fn):
  x = np.asarray(x, np.float64)
  nd = x.ndim - 2
  window = _per_dim(window, nd)
  stride = window if stride is None else _per_dim(stride, nd)
  in_shape = x.shape[1:-1]
  pads = _pads(padding, in_shape, window, stride)
  out_shape = [(i + lo + hi - k) // s + 1 for i, (lo, hi), k, s in zip(in_shape, pads, window, stride)]
  outs = {}
  for o in itertools.product(*(range(n) for n in out_shape)):
    vals, where = [], []
    for t in itertools.product(*(range(k) for k in window)):
      pos = [oj * s + tj - lo for oj, tj, s, (lo, _) in zip(o, t, stride, pads)]
      if all(0 <= p < i for p, i in zip(pos, in_shape)):   # padding is never counted
        vals.append(x[(slice(None), *pos, slice(None))])
        where.append(np.ravel_multi_index(pos, in_shape))
    outs[o] = reduce_fn(np.stack(vals), np.array(where))
  return out_shape, outs


def max_pool(x, window, *, stride=None, padding="VALID"):
  """Max over the real elements of each window (same as padding with -inf)."""
  out_shape, outs = _pool(x, window, stride, padding, lambda v, _: v.max(axis=0))
  y = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
  for o, v in outs.items():
    y[(slice(None), *o, slice(None))] = v
  return y


def avg_pool(x, window, *, stride=None, padding="VALID"):
  """Mean over the real (unpadded) elements of each window."""
  out_shape, outs = _pool(x, window, stride, padding, lambda v, _: v.mean(axis=0))
  y = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
  for o, v in outs.items():
    y[(slice(None), *o, slice(None))] = v
  return y


def max_pool_argmax(x, window, *, stride=None, padding="VALID"):
  """Flat spatial index of the first (row-major) maximum of each window, per image and channel."""
  def first_max(v, where):
    return where[np.argmax(v, axis=0)]
  out_shape, outs = _pool(x, window, stride, padding, first_max)
  idx = np.zeros((x.shape[0], *out_shape, x.shape[-1]), np.int64)
  for o, v in outs.items():
    idx[(slice(None), *o, slice(None))] = v
  return idx


def max_unpool(y, indices, output_shape):
  """Put y[n, o, c] at flat spatial position indices[n, o, c] of a zero (N, *output_shape, C) array."""
  y, indices = np.asarray(y, np.float64), np.asarray(indices)
  n, c = y.shape[0], y.shape[-1]
  out = np.zeros((n, int(np.prod(output_shape)), c))
  for b in range(n):
    for o in itertools.product(*(range(s) for s in y.shape[1:-1])):
      for ch in range(c):
        out[b, indices[(b, *o, ch)], ch] = y[(b, *o, ch)]
  return out.reshape((n, *output_shape, c))


try:
  from jaxseg._reference_losses import *  # noqa: F401,F403  (losses/Dice references, written by the losses helper)
except ImportError:
  pass
