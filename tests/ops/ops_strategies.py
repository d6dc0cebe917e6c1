"""Hypothesis strategies and helpers shared by the tests of jaxseg.ops."""

import hypothesis.strategies as st
import numpy as np
from hypothesis import assume

from jaxseg import reference


@st.composite
def conv_cases(draw, max_nd=3):
  """Random (x_shape, w_shape, kwargs) with a non-empty output; groups incl. depthwise."""
  nd = draw(st.integers(1, max_nd))
  size_max = {1: 9, 2: 7, 3: 5}[nd]
  spatial = tuple(draw(st.lists(st.integers(2, size_max), min_size=nd, max_size=nd)))
  kernel = tuple(draw(st.lists(st.integers(1, 3 if nd < 3 else 2), min_size=nd, max_size=nd)))
  stride = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
  dilation = tuple(draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd)))
  padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]),
                           st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=nd, max_size=nd)))
  groups = draw(st.sampled_from([1, 1, 2, 3]))
  cin = groups * draw(st.integers(1, 2))
  depthwise = draw(st.booleans()) and groups > 1
  cout = cin if depthwise else groups * draw(st.integers(1, 2))
  if depthwise:
    groups = cin
  k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
  if padding == "VALID":
    assume(all(i >= k for i, k in zip(spatial, k_eff)))
  elif padding != "SAME":
    assume(all(i + lo + hi >= k for i, (lo, hi), k in zip(spatial, padding, k_eff)))
  n = draw(st.integers(1, 2))
  return ((n,) + spatial + (cin,), kernel + (cin // groups, cout),
          dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def seeds():
  return st.integers(0, 2**16)


def arrays(seed, *shapes):
  """Standard-normal float32 arrays of the given shapes, reproducible from `seed`."""
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s).astype(np.float32) for s in shapes]


def forward_out_size(x, k_eff, s, padding):
  """Output length of a conv along one dim (TensorFlow SAME / VALID / (lo, hi))."""
  if padding == "SAME":
    return -(-x // s)
  lo, hi = (0, 0) if padding == "VALID" else padding
  return (x + lo + hi - k_eff) // s + 1


@st.composite
def conv_transpose_cases(draw, max_nd=3):
  """Random (y_shape, w_shape, kwargs) for which Keras' output length is a consistent conv input."""
  nd = draw(st.integers(1, max_nd))
  n_max, k_max = {1: (6, 4), 2: (4, 4), 3: (3, 2)}[nd]
  n_sp = tuple(draw(st.lists(st.integers(1, n_max), min_size=nd, max_size=nd)))
  kernel = tuple(draw(st.lists(st.integers(1, k_max), min_size=nd, max_size=nd)))
  stride = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
  dilation = tuple(draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd)))
  padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]),
                           st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=nd, max_size=nd)))
  output_padding = None
  if draw(st.booleans()):
    output_padding = tuple(draw(st.integers(0, s - 1)) for s in stride)
  per_dim = [padding] * nd if isinstance(padding, str) else list(padding)
  opad = output_padding or (None,) * nd
  for n, k, p, s, d, op in zip(n_sp, kernel, per_dim, stride, dilation, opad):
    x = reference.deconv_output_length(n, k, p, s, d, op)
    # SAME with output_padding follows Keras' own placement (checked by the reference), any size.
    assume(x >= 1 and (forward_out_size(x, (k - 1) * d + 1, s, p) == n or (p == "SAME" and op is not None)))
  cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
  batch = draw(st.integers(1, 2))
  return ((batch,) + n_sp + (cin,), kernel + (cout, cin),
          dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation))


def jit_run(fn, *args):
  """jit + run `fn` once, compiled at XLA's lowest backend optimisation level.

  Property tests compile a new program per random shape; compilation, not
  running, is their cost, and the lowest level roughly halves it.
  """
  import jax
  compiled = jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})
  return compiled(*args)
