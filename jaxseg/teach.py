"""Convolution as a sparse matrix, for teaching (the library side of `jaxseg explain`).

A 2-D convolution of one image is linear in the image, so with the image
flattened to a vector x (row-major over space, then channel) it is a matrix
product y = W x, where W = ``jaxseg.ops.conv_matrix(w, ...)`` is sparse and
repeats the filter in every row. The transposed convolution is W^T, which is
also the gradient of the convolution with respect to its input. The im2col
view writes the same product the other way round: a patch matrix (one row per
output pixel) times the kernel reshaped to a column.

Everything here calls the project's own ops (``jaxseg.ops.conv``,
``conv_transpose``, ``conv_matrix``); the code of its own is the patch
gather of the im2col view (written out so it can be shown), the geometry it
prints, the parsing of flags, the printing and the figures.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxseg.errors import UserError

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
INPUTS = ("seed", "ramp", "random")
# explain builds W densely (to print and draw it); this bounds its memory (16 MB).
MAX_DENSE_ENTRIES = 4_000_000


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


# ---------------------------------------------------------------- parsing

def _parse_numbers(text: str, flag: str) -> np.ndarray:
  """'1,0,-1;2,0,-2' -> 2-D float array (rows split by ';', entries by ',')."""
  rows = [r for r in text.replace(" ", "").split(";") if r != ""]
  try:
    values = [[float(v) for v in r.split(",")] for r in rows]
  except ValueError:
    raise UserError(f"{flag} {text!r}: not a name or a literal like '1,0,-1;2,0,-2'") from None
  if not values or len({len(r) for r in values}) != 1:
    raise UserError(f"{flag} {text!r}: rows must be non-empty and of equal length")
  a = np.array(values, np.float32)
  if not np.all(np.isfinite(a)):
    raise UserError(f"{flag} {text!r}: entries must be finite numbers")
  return a


def parse_kernel(spec: str, *, seed: int = 0) -> np.ndarray:
  """A named kernel, 'random' (integers in [-2, 2]) or a literal 'a,b;c,d'."""
  if spec in KERNELS:
    return KERNELS[spec].copy()
  if spec == "random":
    return np.random.default_rng(seed + 1).integers(-2, 3, (3, 3)).astype(np.float32)
  if not any(c.isdigit() for c in spec):
    names = ", ".join(list(KERNELS) + ["random"])
    raise UserError(f"--kernel {spec!r}: unknown name (known: {names}) and not a literal like '1,0,-1;2,0,-2'")
  return _parse_numbers(spec, "--kernel")


def parse_ints(text: str | None, flag: str, *, n: int = 2, minimum: int = 1) -> tuple[int, ...] | None:
  """'3' -> (3, 3); '3,4' -> (3, 4); checks the lower bound."""
  if text is None:
    return None
  try:
    vals = tuple(int(v) for v in str(text).split(","))
  except ValueError:
    raise UserError(f"{flag} {text!r}: expected an integer or {n} integers separated by ','") from None
  if len(vals) == 1:
    vals = vals * n
  if len(vals) != n:
    raise UserError(f"{flag} {text!r}: expected 1 or {n} integers, got {len(vals)}")
  if min(vals) < minimum:
    raise UserError(f"{flag} {text!r}: values must be >= {minimum}")
  return vals


def parse_padding(text: str):
  """'SAME', 'VALID', 'P' (all sides), 'PH,PW' or 'TOP,BOTTOM,LEFT,RIGHT'."""
  up = text.strip().upper()
  if up in ("SAME", "VALID"):
    return up
  try:
    vals = [int(v) for v in text.split(",")]
  except ValueError:
    raise UserError(f"--padding {text!r}: expected SAME, VALID, P, PH,PW or T,B,L,R") from None
  if min(vals) < 0:
    raise UserError(f"--padding {text!r}: padding must be >= 0")
  if len(vals) == 1:
    return ((vals[0], vals[0]), (vals[0], vals[0]))
  if len(vals) == 2:
    return ((vals[0], vals[0]), (vals[1], vals[1]))
  if len(vals) == 4:
    return ((vals[0], vals[1]), (vals[2], vals[3]))
  raise UserError(f"--padding {text!r}: expected 1, 2 or 4 integers")


def make_input(spec: str, size: tuple[int, int] | None, channels: int, *, seed: int = 0) -> np.ndarray:
  """The input image (1, H, W, C): 'seed' (000_* 5x5), 'ramp' (1, 2, 3, ...), 'random' or a literal."""
  if spec == "seed":
    if size not in (None, (5, 5)) or channels != 1:
      raise UserError("--input seed is the 5x5 one-channel image of the worked example; "
                      "use --input random or ramp for other sizes/channels")
    return SEED_INPUT[None, :, :, None].copy()
  if spec in ("ramp", "random"):
    h, w = size or (5, 5)
    if spec == "ramp":
      x = np.arange(1, h * w * channels + 1, dtype=np.float32).reshape(h, w, channels)
    else:
      x = np.random.default_rng(seed).integers(-2, 3, (h, w, channels)).astype(np.float32)
    return x[None]
  if not any(c.isdigit() for c in spec):
    raise UserError(f"--input {spec!r}: unknown name (known: {', '.join(INPUTS)}) and not a literal like '1,2;3,4'")
  x = _parse_numbers(spec, "--input")
  if size is not None and tuple(size) != x.shape:
    raise UserError(f"--input: the literal is {x.shape[0]}x{x.shape[1]} but --size asks for {size[0]}x{size[1]}")
  if channels != 1:
    raise UserError("--input: a literal input has one channel; use --in-channels 1")
  return x[None, :, :, None]


def make_weights(kernel: np.ndarray, in_channels: int, out_channels: int) -> np.ndarray:
  """(kh, kw) -> (kh, kw, Cin, Cout); channel pair (i, o) gets the kernel times (1 + i*Cout + o)
  so every block of W is a different multiple of the same pattern."""
  scale = 1 + np.arange(in_channels)[:, None] * out_channels + np.arange(out_channels)[None, :]
  return (kernel[:, :, None, None] * scale[None, None]).astype(np.float32)


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


def build_example(*, size=None, kernel="seed", input=None, stride="1", padding="VALID",
                  dilation="1", in_channels=1, out_channels=1, seed=0) -> Example:
  """Checks the flags of `jaxseg explain` and returns the Example they describe."""
  if in_channels < 1 or out_channels < 1:
    raise UserError("--in-channels/--out-channels must be >= 1")
  size = parse_ints(size, "--size")
  if input is None:
    input = "seed" if size in (None, (5, 5)) and in_channels == 1 else "random"
  k = parse_kernel(kernel, seed=seed)
  x = make_input(input, size, in_channels, seed=seed)
  ex = Example(x=x, w=make_weights(k, in_channels, out_channels),
               stride=parse_ints(stride, "--stride"),
               padding=parse_padding(padding),
               dilation=parse_ints(dilation, "--dilation"))
  oh, ow = ex.out_hw
  if oh < 1 or ow < 1:
    kd = [(kk - 1) * d + 1 for kk, d in zip(k.shape, ex.dilation)]
    raise UserError(f"--size {x.shape[1]}x{x.shape[2]} with a {kd[0]}x{kd[1]} (dilated) kernel and "
                    f"padding {padding}: the output would be empty ({oh}x{ow})")
  n_entries = oh * ow * ex.w.shape[-1] * x.size
  if n_entries > MAX_DENSE_ENTRIES:
    raise UserError(f"--size {x.shape[1]}x{x.shape[2]}: W would have {n_entries:,} entries, more than "
                    f"the {MAX_DENSE_ENTRIES:,} explain draws densely; use a smaller size or fewer channels")
  return ex


def ensure_dir(path: str) -> None:
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"--out {path}: cannot create the directory ({e.strerror})") from None


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
  """Computes every view of the example; all arrays are NumPy."""
  import jax.numpy as jnp
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


# ---------------------------------------------------------------- printing

def _is_int(a: np.ndarray) -> bool:
  return bool(np.all(np.abs(a - np.round(a)) < 1e-4))


def fmt_values(a: np.ndarray) -> list[str]:
  """Strings for every entry: integers if all entries are, else up to 4 decimals, trimmed."""
  a = np.asarray(a, np.float64).reshape(-1)
  if _is_int(a):
    return [str(int(v)) for v in np.round(a)]
  out = []
  for v in a:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    out.append("0" if s in ("-0", "") else s)
  return out


def format_matrix(M: np.ndarray, *, structure: np.ndarray | None = None,
                  row_labels=None, group: int | None = None) -> list[str]:
  """Lines of a dense print; '.' where structure is False; '|' every `group` columns."""
  M = np.asarray(M)
  if M.ndim == 1:
    M = M[None]
  cells = np.array(fmt_values(M), dtype=object).reshape(M.shape)
  if structure is not None:
    cells[~structure] = "."
  width = max(len(c) for c in cells.reshape(-1))
  lab_w = max((len(r) for r in row_labels), default=0) if row_labels else 0
  lines = []
  for i, row in enumerate(cells):
    parts = []
    for j, c in enumerate(row):
      if group and j and j % group == 0:
        parts.append("|")
      parts.append(c.rjust(width))
    prefix = (row_labels[i].ljust(lab_w) + "  ") if row_labels else ""
    lines.append(prefix + " ".join(parts))
  return lines


def side_by_side(blocks: list[tuple[str, list[str]]], gap: int = 4) -> list[str]:
  """[(title, lines), ...] -> lines with the blocks next to each other."""
  widths = [max([len(t)] + [len(l) for l in ls]) for t, ls in blocks]
  height = max(len(ls) for _, ls in blocks)
  sep = " " * gap
  out = [sep.join(t.ljust(w) for (t, _), w in zip(blocks, widths)).rstrip()]
  for i in range(height):
    out.append(sep.join((ls[i] if i < len(ls) else "").ljust(w)
                        for (_, ls), w in zip(blocks, widths)).rstrip())
  return out


def _maps(a: np.ndarray) -> list[str]:
  """(h, w, c) -> lines, the channels one under another."""
  lines = []
  for c in range(a.shape[-1]):
    if a.shape[-1] > 1:
      lines.append(f"[channel {c}]")
    lines += format_matrix(a[..., c])
  return lines


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


DENSE_LIMIT = 64     # rows and columns of W printed in full


def report(ex: Example, r: dict) -> str:
  """The text `jaxseg explain` prints."""
  h, w, cin = ex.x.shape[1:]
  kh, kw, _, cout = ex.w.shape
  oh, ow = ex.out_hw
  W, structure = r["W"], r["structure"]
  nnz = int(structure.sum())
  L = []
  L.append(f"Convolution of a {h}x{w}x{cin} input with a {kh}x{kw}x{cin}x{cout} kernel, "
           f"stride {ex.stride}, padding {ex.padding} (= {ex.pads}), dilation {ex.dilation}"
           f" -> {oh}x{ow}x{cout} output.")
  L.append("Cross-correlation, as in lax.conv and every deep learning library (no kernel flip).")
  L.append("")
  L.append("Kernel w (kh x kw, per input/output channel pair):")
  for i in range(cin):
    for o in range(cout):
      if cin * cout > 1:
        L.append(f"[in {i} -> out {o}]")
      L += ["  " + s for s in format_matrix(ex.w[:, :, i, o])]
  L.append("")
  L.append(f"Input x flattened to a vector of length {h}*{w}*{cin} = {W.shape[1]} "
           "(row-major over space, then channel; '|' separates image rows):")
  L += ["  " + s for s in format_matrix(r["x_vec"], group=w * cin)]
  L.append("")
  L.append(f"W = conv_matrix(w, ...): shape {W.shape[0]} x {W.shape[1]} "
           f"(output pixels*Cout x input pixels*Cin), {nnz} structural non-zeros, "
           f"density {nnz / W.size:.3f} ({nnz / W.shape[0]:.1f} per row, "
           f"at most {kh * kw * cin} = kh*kw*Cin).")
  if max(W.shape) <= DENSE_LIMIT:
    if cin * cout == 1:
      L.append("'.' = structural zero (the filter does not reach that pixel); every row is the same "
               "filter, shifted by the stride:")
    else:
      L.append(f"'.' = structural zero; each output pixel has {cout} row{'s' if cout > 1 else ''} (one per output channel), "
               f"and its taps are blocks of {cin} adjacent columns (the input channels); the rows of "
               "every output pixel repeat the same pattern, shifted by the stride:")
    labels = [f"y[{i},{j}{',' + str(c) if cout > 1 else ''}]"
              for i in range(oh) for j in range(ow) for c in range(cout)]
    L += ["  " + s for s in format_matrix(W, structure=structure, row_labels=labels, group=w * cin)]
  else:
    L.append(f"(W is larger than {DENSE_LIMIT}x{DENSE_LIMIT}: not printed; --out DIR draws its sparsity pattern.)")
  L.append("")
  L.append("y = W x, the direct sum and lax.conv (the same numbers):")
  L += ["  " + s for s in side_by_side([("W @ x", _maps(r["y_matrix"])),
                                        ("conv(impl='direct')", _maps(r["y_direct"])),
                                        ("conv(impl='lax')", _maps(r["y_lax"]))])]
  L.append(f"  max |W x - direct| = {_max_diff(r['y_matrix'], r['y_direct']):.2g}, "
           f"max |W x - lax| = {_max_diff(r['y_matrix'], r['y_lax']):.2g}")
  L.append("")
  L.append(f"W^T y: the transposed convolution maps the {oh}x{ow}x{cout} output back to "
           f"{h}x{w}x{cin}; it is also the gradient of the conv (the same numbers):")
  blocks = [("W.T @ y", _maps(r["wty"]))]
  if r["conv_transpose"] is not None:
    op = r["output_padding"]
    blocks.append((f"conv_transpose(y{'' if op is None else f', output_padding={op}'})",
                   _maps(r["conv_transpose"])))
  blocks.append(("vjp of conv at y", _maps(r["vjp"])))
  L += ["  " + s for s in side_by_side(blocks)]
  if r["conv_transpose"] is not None:
    L.append(f"  max |W^T y - conv_transpose| = {_max_diff(r['wty'], r['conv_transpose']):.2g}, "
             f"max |W^T y - vjp| = {_max_diff(r['wty'], r['vjp']):.2g}")
  else:
    L.append("  (conv_transpose cannot produce this input size; "
             f"max |W^T y - vjp| = {_max_diff(r['wty'], r['vjp']):.2g})")
  L.append("")
  P, K = r["patches"], r["kmat"]
  L.append(f"im2col: patch matrix P ({P.shape[0]} output pixels x {P.shape[1]} = kh*kw*Cin taps, "
           f"zero padding included) times the kernel reshaped to K ({K.shape[0]} x {K.shape[1]}):")
  if max(P.shape) <= DENSE_LIMIT:
    prod = r["im2col"].reshape(-1, cout)
    L += ["  " + s for s in side_by_side([("P", format_matrix(P)), ("K", format_matrix(K)),
                                          ("P @ K", format_matrix(prod))], gap=3)]
  else:
    L.append("  (too large to print; --out DIR draws it)")
  L.append(f"  P @ K reshaped to {oh}x{ow}x{cout} equals y: max |P K - W x| = "
           f"{_max_diff(r['im2col'], r['y_matrix']):.2g}")
  return "\n".join(L)


def summary(ex: Example, r: dict) -> dict:
  """The JSON result of `jaxseg explain --json`."""
  y = r["y_matrix"]
  return {"y": (y[..., 0] if y.shape[-1] == 1 else y).tolist(),
          "y_shape": list(y.shape),
          "W_shape": list(r["W"].shape),
          "nnz": int(r["structure"].sum()),
          "density": float(r["structure"].mean()),
          "max_abs_diff": {
              "direct": _max_diff(y, r["y_direct"]), "lax": _max_diff(y, r["y_lax"]),
              "im2col": _max_diff(y, r["im2col"]), "vjp": _max_diff(r["wty"], r["vjp"]),
              "conv_transpose": (None if r["conv_transpose"] is None
                                 else _max_diff(r["wty"], r["conv_transpose"]))}}


# ---------------------------------------------------------------- figures

def spy(ax, W, structure, title):
  """W drawn as an image: white = structural zero, colour = value (0-valued taps in grey)."""
  import matplotlib.colors as mcolors
  from matplotlib.ticker import MaxNLocator
  vmax = float(np.max(np.abs(W))) or 1.0
  img = np.ma.masked_where(~structure, W)
  cmap = mcolors.LinearSegmentedColormap.from_list(
      "bwr_", ["#2166ac", "#e0e0e0", "#b2182b"]).with_extremes(bad="white")
  ax.imshow(img, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest", aspect="equal")
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("input index", fontsize=8)
  ax.set_ylabel("output index", fontsize=8)
  ax.tick_params(labelsize=7)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def figures(ex: Example, r: dict, out_dir: str) -> list[str]:
  """Writes w_sparsity.png, im2col.png and shapes.png into out_dir; returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import patheffects
  ensure_dir(out_dir)
  paths = []

  W, S = r["W"], r["structure"]
  fig, ax = plt.subplots(figsize=(6, 6 * min(max(W.shape[0] / W.shape[1], 0.3), 2)))
  spy(ax, W, S, f"W: {W.shape[0]}x{W.shape[1]}, nnz {int(S.sum())}, density {S.mean():.3f}")
  paths.append(os.path.join(out_dir, "w_sparsity.png"))
  fig.tight_layout()
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)

  P, K = r["patches"], r["kmat"]
  prod = r["im2col"].reshape(-1, K.shape[1])
  fig, axes = plt.subplots(1, 3, figsize=(9, 5), gridspec_kw={"width_ratios": [P.shape[1], K.shape[1] * 2, K.shape[1] * 2]})
  for ax, m, t in zip(axes, (P, K, prod), (f"patches P {P.shape[0]}x{P.shape[1]}",
                                          f"K {K.shape[0]}x{K.shape[1]}", f"P @ K {prod.shape[0]}x{prod.shape[1]}")):
    ax.imshow(m, cmap="viridis", interpolation="nearest", aspect="auto")
    if m.size <= 400:
      for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, fmt_values(np.array([v]))[0], ha="center", va="center", fontsize=7, color="w",
                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="k")])
    ax.set_title(t, fontsize=9)
    ax.tick_params(labelsize=7)
  paths.append(os.path.join(out_dir, "im2col.png"))
  fig.tight_layout()
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)

  paths.append(os.path.join(out_dir, "shapes.png"))
  shapes_figure(ex, paths[-1])
  return paths


def shapes_figure(ex: Example, path: str, strides=(1, 2, 3), paddings=("VALID", "SAME")) -> None:
  """A grid of W's sparsity pattern: rows = padding, columns = stride."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  # Shared axes: every W is drawn at the same scale, so its shape is seen.
  fig, axes = plt.subplots(len(paddings), len(strides), figsize=(3.2 * len(strides), 3.4 * len(paddings)),
                           squeeze=False, sharex=True, sharey=True)
  configs = {(pad, s): dataclasses.replace(ex, padding=pad, stride=(s, s))
             for pad in paddings for s in strides}
  configs = {key: e for key, e in configs.items() if min(e.out_hw) >= 1}
  mats = _dense_matrices(ex.w, ex.x.shape[1:], tuple((e.stride, e.padding) for e in configs.values()),
                         ex.dilation)
  mats = dict(zip(configs, mats))
  max_rows = max(W.shape[0] for W, _ in mats.values())
  for i, pad in enumerate(paddings):
    for j, s in enumerate(strides):
      ax = axes[i, j]
      if (pad, s) not in mats:
        ax.set_axis_off()
        ax.set_title(f"{pad}, stride {s}: empty output", fontsize=9)
        continue
      W, S = mats[(pad, s)]
      spy(ax, W, S, f"{pad}, stride {s}: W {W.shape[0]}x{W.shape[1]}")
  axes[0, 0].set_xlim(-0.5, ex.x.size - 0.5)
  axes[0, 0].set_ylim(max_rows - 0.5, -0.5)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _dense_matrices(w, input_shape, configs, dilation):
  """Dense W and structure for several (stride, padding) configs, compiled together."""
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
