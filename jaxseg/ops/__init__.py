"""Convolution, transposed convolution and pooling, several ways.

PLACEHOLDER written by the project lead so other modules can import the
contract while the real implementations land (owned by the ops work):
only impl="lax" works here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _tuple(v, n):
  return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def conv(x, w, *, stride=1, padding="SAME", dilation=1, groups=1, impl="lax"):
  nd = x.ndim - 2
  spatial = "DHW"[-nd:] if nd <= 3 else None
  dn = lax.conv_dimension_numbers(x.shape, w.shape,
                                  ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
  pad = padding if isinstance(padding, str) else [tuple(p) for p in padding]
  return lax.conv_general_dilated(x, w, _tuple(stride, nd), pad,
                                  rhs_dilation=_tuple(dilation, nd),
                                  dimension_numbers=dn, feature_group_count=groups)


def conv_transpose(y, w, *, stride=1, padding="SAME", output_padding=None, dilation=1, impl="lax"):
  raise NotImplementedError


def max_pool(x, window, *, stride=None, padding="VALID"):
  nd = x.ndim - 2
  window = _tuple(window, nd)
  stride = window if stride is None else _tuple(stride, nd)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + window + (1,), (1,) + stride + (1,), padding)
