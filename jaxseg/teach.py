"""Convolution as a sparse matrix, for teaching: the numbers behind `jaxseg explain`.

A 2-D convolution of one image is linear in the image, so with the image
flattened to a vector x (row-major over space, then channel) it is a matrix
product y = W x, where W = ``jaxseg.ops.conv_matrix(w, ...)`` is sparse and
repeats the filter in every row. The transposed convolution is W^T, which is
also the gradient of the convolution with respect to its input. The im2col
view writes the same product the other way round: a patch matrix (one row per
output pixel) times the kernel reshaped to a column.

Everything here calls the project's own ops (``jaxseg.ops.conv``,
``conv_transpose``, ``conv_matrix``); the code of its own is the patch
gather of the im2col view (written out so it can be shown) and the geometry.
This module computes and returns arrays; the command's flags, its text and
its figures are in `jaxseg.commands.explain` and `jaxseg.commands.explain_output`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxseg.errors import ConfigError, UserError

# The worked example of the 000_* lecture: 5x5 input, 3x3 filter, VALID gives
# a 3x3 output (cross-correlation, as in every deep learning library).
SEED_INPUT = np.array([[0, 1, 0, 2, 2],
                       [1, 2, 2, 1, 2],
                       [2, 2, 1, 0, 0],
                       [2, 1, 2, 2, 1],
                       [0, 0, 0, 1, 0]], np.float32)
SEED_KERNEL = np.array([[-1, 1, 0],
                        [-1, 0, 1],
                        [0, -1, 0]], np.float32)

# Named kernels as in the 002_* lecture (Sobel, [1,2,1]/4 smoothing and
# [1,0,-1] difference, the last two as 1x3 row filters).
KERNELS = {
    "seed": SEED_KERNEL,
    "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
    "sobel_y": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    "smooth": np.array([[1, 2, 1]], np.float32) / 4,
    "diff": np.array([[1, 0, -1]], np.float32),
}
# Named inputs (`named_input`): the 000_* image, 1, 2, 3, ... and small random integers.
INPUTS = ("seed", "ramp", "random")
# `explain` builds W densely (to print and draw it); this bounds its memory (16 MB).
MAX_DENSE_ENTRIES = 4_000_000


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


@dataclasses.dataclass(frozen=True)
class Example:
  """One convolution to explain: x (1, H, W, Cin), w (kh, kw, Cin, Cout)."""
  x: np.ndarray
  w: np.ndarray
  stride: tuple[int, int] = (1, 1)
  padding: Any = "VALID"      # "SAME", "VALID" or ((lo, hi), (lo, hi))
  dilation: tuple[int, int] = (1, 1)

  @property
  def conv_kwargs(self):
    return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

  @property
  def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
    return resolve_padding(self.x.shape[1:3], self.w.shape[:2], self.stride,
                           self.padding, self.dilation)

  @property
  def out_hw(self) -> tuple[int, int]:
    return output_hw(self.x.shape[1:3], self.w.shape[:2], self.stride, self.pads, self.dilation)

  @property
  def dense_entries(self) -> int:
    """Entries of the dense W: (output pixels * Cout) x (input pixels * Cin)."""
    oh, ow = self.out_hw
    return oh * ow * self.w.shape[-1] * self.x.size


# ---------------------------------------------------------------- building examples

def random_kernel(seed: int = 0) -> np.ndarray:
  """A 3x3 kernel of integers in [-2, 2] (from ``seed + 1``, so it differs from the random input)."""
  return np.random.default_rng(seed + 1).integers(-2, 3, (3, 3)).astype(np.float32)


def named_input(name: str, hw: tuple[int, int] | None = None, channels: int = 1, *, seed: int = 0) -> np.ndarray:
  """The input image (1, H, W, C) called `name` (one of INPUTS), default 5x5.

  "seed" is the 5x5 one-channel image of the 000_* example; "ramp" holds
  1, 2, 3, ... (row-major over space, then channel); "random" integers in
  [-2, 2] from `seed`.
  """
  if name == "seed":
    if hw not in (None, (5, 5)) or channels != 1:
      raise ConfigError("the seed input is the 5x5 one-channel image of the worked example")
    return SEED_INPUT[None, :, :, None].copy()
  h, w = hw or (5, 5)
  if name == "ramp":
    return np.arange(1, h * w * channels + 1, dtype=np.float32).reshape(1, h, w, channels)
  if name == "random":
    return np.random.default_rng(seed).integers(-2, 3, (h, w, channels)).astype(np.float32)[None]
  raise ConfigError(f"unknown input {name!r} (known: {', '.join(INPUTS)})")


def make_weights(kernel: np.ndarray, in_channels: int, out_channels: int) -> np.ndarray:
  """(kh, kw) -> (kh, kw, Cin, Cout); channel pair (i, o) gets the kernel times (1 + i*Cout + o)
  so every block of W is a different multiple of the same pattern."""
  scale = 1 + np.arange(in_channels)[:, None] * out_channels + np.arange(out_channels)[None, :]
  return (kernel[:, :, None, None] * scale[None, None]).astype(np.float32)


def make_example(x: np.ndarray, kernel: np.ndarray, *, out_channels: int = 1, stride=1,
                 padding="VALID", dilation=1) -> Example:
  """The Example of image x (1, H, W, Cin) and a 2-D kernel (kh, kw), spread over the channel
  pairs by `make_weights`. stride, dilation: int or pair; padding: "SAME", "VALID" or
  ((top, bottom), (left, right))."""
  x = np.asarray(x, np.float32)
  kernel = np.asarray(kernel, np.float32)
  if x.ndim != 4 or x.shape[0] != 1 or kernel.ndim != 2:
    raise ConfigError(f"make_example needs x (1, H, W, C) and a 2-D kernel, got {x.shape} and {kernel.shape}")
  padding = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
  return Example(x=x, w=make_weights(kernel, x.shape[-1], out_channels), stride=_pair(stride),
                 padding=padding, dilation=_pair(dilation))


def seed_example() -> Example:
  """The 000_* lecture's worked example: the 5x5 seed input, the 3x3 seed kernel, VALID."""
  return make_example(named_input("seed"), SEED_KERNEL)


def check_example(ex: Example) -> None:
  """ConfigError if the output is empty or W has more than MAX_DENSE_ENTRIES entries."""
  oh, ow = ex.out_hw
  if oh < 1 or ow < 1:
    raise ConfigError(f"a {ex.x.shape[1]}x{ex.x.shape[2]} input with this kernel, stride and padding "
                      f"has an empty output ({oh}x{ow})")
  if ex.dense_entries > MAX_DENSE_ENTRIES:
    raise ConfigError(f"W would have {ex.dense_entries:,} entries, more than the {MAX_DENSE_ENTRIES:,} "
                      "explain builds densely")


def resolve_padding(in_hw, k_hw, stride, padding, dilation):
  """Padding as explicit ((lo, hi), (lo, hi)); SAME follows lax/TensorFlow (extra pixel at the end)."""
  if not isinstance(padding, str):
    return tuple(tuple(p) for p in padding)
  pads = []
  for n, k, s, d in zip(in_hw, k_hw, stride, dilation):
    if padding == "VALID":
      pads.append((0, 0))
    else:
      kd = (k - 1) * d + 1
      out = -(-n // s)
      total = max((out - 1) * s + kd - n, 0)
      pads.append((total // 2, total - total // 2))
  return tuple(pads)


def output_hw(in_hw, k_hw, stride, pads, dilation) -> tuple[int, int]:
  return tuple((n + lo + hi - ((k - 1) * d + 1)) // s + 1
               for n, k, s, (lo, hi), d in zip(in_hw, k_hw, stride, pads, dilation))


# ---------------------------------------------------------------- the views

def conv_matrix_dense(ex: Example) -> tuple[np.ndarray, np.ndarray]:
  """W as a dense array and its structural non-zeros (where a filter tap meets a real pixel).

  The structure is W of an all-ones kernel, so a kernel coefficient that is 0
  still counts as a (stored) entry, and zero padding never does.
  """
  W, S, _, _ = _matrix_views(ex.w, ex.x[0].reshape(-1), ex.x.shape[1:], **ex.conv_kwargs)
  return np.asarray(W), np.asarray(S)


def _matrix_views(w, x_vec, input_shape, *, stride, padding, dilation):
  """Dense W, its structure, y = W x and W^T y, with W the BCOO matrix of `ops.conv_matrix`."""
  # One jit per call: op-by-op dispatch would compile every primitive separately.
  import jax
  import jax.numpy as jnp
  from jaxseg import ops

  def f(w, x_vec):
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    m = ops.conv_matrix(w, input_shape, **kw)
    y_vec = m @ x_vec
    return (m.todense(), ops.conv_matrix(jnp.ones_like(w), input_shape, **kw).todense() != 0,
            y_vec, m.T @ y_vec)
  return jax.jit(f)(jnp.asarray(w), jnp.asarray(x_vec))


def im2col_patches(ex: Example) -> np.ndarray:
  """The patch matrix: row p = the (kh, kw, Cin) neighbourhood of output pixel p, flattened.

  Gathered with NumPy indexing on the zero-padded image so the construction is
  visible; the kernel reshaped to (kh*kw*Cin, Cout) multiplies it from the right.
  """
  (plo, phi), (qlo, qhi) = ex.pads
  x = np.pad(ex.x[0], ((plo, phi), (qlo, qhi), (0, 0)))
  kh, kw = ex.w.shape[:2]
  oh, ow = ex.out_hw
  (sh, sw), (dh, dw) = ex.stride, ex.dilation
  rows = (np.arange(oh) * sh)[:, None, None, None] + (np.arange(kh) * dh)[None, None, :, None]
  cols = (np.arange(ow) * sw)[None, :, None, None] + (np.arange(kw) * dw)[None, None, None, :]
  patches = x[rows, cols]                    # (oh, ow, kh, kw, Cin)
  return patches.reshape(oh * ow, -1)


def transpose_output_padding(ex: Example):
  """output_padding that makes conv_transpose land on the input size (None if the default does)."""
  (h, w), (oh, ow) = ex.x.shape[1:3], ex.out_hw
  default, op = [], []
  for n, o, k, s, d, (lo, hi) in zip((h, w), (oh, ow), ex.w.shape[:2], ex.stride, ex.dilation, ex.pads):
    kd = (k - 1) * d + 1
    if ex.padding == "SAME":
      default.append(o * s)
      op.append(n - ((o - 1) * s + kd - 2 * (kd // 2)))
    elif ex.padding == "VALID":
      default.append(o * s + max(kd - s, 0))
      op.append(n - ((o - 1) * s + kd))
    else:
      default.append(None)
      op.append(n - ((o - 1) * s + kd - lo - hi))
  if default == [h, w]:
    return None
  return tuple(op)


def _conv_views(x, w, y, *, kw, output_padding, transpose):
  """conv (direct, lax), its vjp at y and (optionally) conv_transpose of y, in one jit."""
  import jax
  from jaxseg import ops

  def f(x, w, y):
    y_direct = ops.conv(x, w, impl="direct", **kw)
    y_lax, vjp = jax.vjp(lambda v: ops.conv(v, w, impl="lax", **kw), x)
    tconv = ops.conv_transpose(y, w, output_padding=output_padding, **kw) if transpose else None
    return y_direct, y_lax, vjp(y)[0], tconv
  return jax.jit(f)(x, w, y)


def explain(ex: Example) -> dict:
  """Every view of the example, as NumPy arrays.

  Keys: x_vec (x flattened), W and structure (`conv_matrix_dense`), y_matrix
  (W x as (oh, ow, Cout)), y_direct and y_lax (`ops.conv`), wty (W^T y as x's
  shape), conv_transpose (`ops.conv_transpose` of y; None when no
  output_padding reaches x's size), vjp (the conv's input gradient at y),
  patches and kmat (`im2col_patches`, the kernel as (kh*kw*Cin, Cout)),
  im2col (their product as y's shape) and output_padding
  (`transpose_output_padding`). ConfigError for what `check_example` rejects.
  """
  import jax.numpy as jnp
  check_example(ex)
  oh, ow = ex.out_hw
  cout = ex.w.shape[-1]
  x_vec = ex.x[0].reshape(-1)
  # y = W x and W^T y with the sparse (BCOO) W; the dense copy is for printing.
  W, structure, y_vec, wty = (np.asarray(a) for a in _matrix_views(
      ex.w, x_vec, ex.x.shape[1:], **ex.conv_kwargs))
  y_matrix = y_vec.reshape(oh, ow, cout)
  wty = wty.reshape(ex.x.shape[1:])
  # Next to them: the direct sum, lax.conv, conv_transpose and the gradient (vjp) of the conv.
  output_padding = transpose_output_padding(ex)
  args = (jnp.asarray(ex.x), jnp.asarray(ex.w), jnp.asarray(y_matrix[None]))
  try:
    y_direct, y_lax, grad, tconv = _conv_views(*args, kw=ex.conv_kwargs,
                                               output_padding=output_padding, transpose=True)
  except UserError:     # conv_transpose cannot reach this input size
    y_direct, y_lax, grad, tconv = _conv_views(*args, kw=ex.conv_kwargs,
                                               output_padding=None, transpose=False)
  tconv = None if tconv is None else np.asarray(tconv)[0]
  if tconv is not None and tconv.shape != wty.shape:
    tconv = None
  patches = im2col_patches(ex)
  kmat = ex.w.reshape(-1, cout)
  return dict(x_vec=x_vec, W=W, structure=structure, y_matrix=y_matrix,
              y_direct=np.asarray(y_direct)[0], y_lax=np.asarray(y_lax)[0], wty=wty,
              conv_transpose=tconv, vjp=np.asarray(grad)[0], patches=patches,
              kmat=kmat, im2col=(patches @ kmat).reshape(oh, ow, cout),
              output_padding=output_padding)


def conv_matrices_dense(w, input_shape, configs, dilation) -> list[tuple[np.ndarray, np.ndarray]]:
  """Dense W and its structure (as `conv_matrix_dense`) of kernel w on an input of
  input_shape (H, W, Cin) for each (stride, padding) of `configs`, compiled together."""
  import jax
  import jax.numpy as jnp
  from jaxseg import ops

  def f(w):
    out = []
    for stride, padding in configs:
      kw = dict(stride=stride, padding=padding, dilation=dilation)
      out.append((ops.conv_matrix(w, input_shape, **kw).todense(),
                  ops.conv_matrix(jnp.ones_like(w), input_shape, **kw).todense() != 0))
    return out
  return [(np.asarray(W), np.asarray(S)) for W, S in jax.jit(f)(jnp.asarray(w))]
