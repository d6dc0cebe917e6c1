"""Convolution as a sparse matrix: a walkthrough that writes its own Markdown.

    .venv/bin/python experiments/teach/walkthrough.py [--out DIR]

writes DIR/walkthrough.md and its figures (default: experiments/teach/output).
Every number in the document is computed here, and every step is checked
against the previous one with an assert, so running it is also a test
(tests/test_walkthrough.py runs it in a temporary directory, ~10-20 s on a CPU).

Sources: the worked 5x5 example of the 000_* lecture; the conv-as-matrix
figure, transposed convolution, resize-convolution and the pooling table of
the 002_* lecture (seeds in ../shared/seeds/).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

from jaxseg import models, ops, teach
from jaxseg.commands import explain_output
from jaxseg.models import layers, summary

ATOL = 1e-5


class Doc:
  """Collects Markdown."""

  def __init__(self):
    self.parts: list[str] = []

  def __call__(self, text: str = "") -> None:
    self.parts.append(text)

  def code(self, lines) -> None:
    self.parts.append("```\n" + "\n".join(lines) + "\n```")

  def table(self, header, rows) -> None:
    self.parts.append("| " + " | ".join(header) + " |")
    self.parts.append("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
      self.parts.append("| " + " | ".join(str(c) for c in r) + " |")
    self.parts.append("")

  def text(self) -> str:
    return "\n".join(self.parts) + "\n"


def close(a, b, what: str, atol: float = ATOL) -> float:
  """Asserts a == b (to atol) and returns the max difference for the document."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, f"{what}: shapes {a.shape} != {b.shape}"
  d = float(np.max(np.abs(a - b))) if a.size else 0.0
  assert d <= atol, f"{what}: max difference {d} > {atol}"
  return d


def conv_loops(x, w, stride, pads):
  """The direct sum, written out: y[i,j,o] = sum_{a,b,c} xpad[i*s+a, j*s+b, c] w[a,b,c,o]."""
  xp = np.pad(x, ((pads[0][0], pads[0][1]), (pads[1][0], pads[1][1]), (0, 0)))
  kh, kw, cin, cout = w.shape
  oh = (xp.shape[0] - kh) // stride[0] + 1
  ow = (xp.shape[1] - kw) // stride[1] + 1
  y = np.zeros((oh, ow, cout))
  for i in range(oh):
    for j in range(ow):
      for o in range(cout):
        total = 0.0
        for a in range(kh):
          for b in range(kw):
            for c in range(cin):
              total += xp[i * stride[0] + a, j * stride[1] + b, c] * w[a, b, c, o]
        y[i, j, o] = total
  return y


@functools.lru_cache(maxsize=None)
def _compiled(fn, static_items):
  return jax.jit(functools.partial(fn, **dict(static_items)))


def jitted(fn, *args, **static):
  """fn(*args, **static) as one compiled program (eager dispatch would compile op by op)."""
  return np.asarray(_compiled(fn, tuple(sorted(static.items())))(*args))


def mat(a) -> list[str]:
  return explain_output.format_matrix(np.asarray(a))


# ------------------------------------------------------------------ sections

def section_four_ways(doc: Doc) -> None:
  doc("## 1. One convolution, four ways")
  doc()
  doc("The worked example of the 000_* lecture: a 5x5 input, a 3x3 filter, no padding. "
      "Deep learning libraries compute the cross-correlation (the filter is not flipped), "
      "and so does every step below.")
  doc()
  ex = teach.seed_example()
  x, w = ex.x[0], ex.w
  doc.code(explain_output.side_by_side([("input x (5x5)", mat(x[..., 0])), ("filter w (3x3)", mat(w[..., 0, 0]))]))

  # (a) the direct sum, as loops
  y_loops = conv_loops(x, w, ex.stride, ex.pads)
  y_direct = jitted(ops.conv, jnp.asarray(ex.x), jnp.asarray(w), impl="direct", padding="VALID")[0]
  d_a = close(y_direct, y_loops, "ops.conv(direct) vs loops")
  doc(f"**(a) Direct sum.** Each output pixel is the sum of the filter times the 3x3 neighbourhood "
      f"under it; nine sums of nine products. `ops.conv(impl='direct')` agrees with the Python loops "
      f"(max difference {d_a:.1g}):")
  doc.code(mat(y_loops[..., 0]))

  # (b) im2col
  P = teach.im2col_patches(ex)
  K = w.reshape(-1, w.shape[-1])
  y_im2col = (P @ K).reshape(y_loops.shape)
  # How often each input pixel is copied into P: im2col of the pixel indices.
  idx = teach.Example(x=np.arange(x.size, dtype=np.float32).reshape(ex.x.shape), w=w)
  copies = np.bincount(teach.im2col_patches(idx).astype(int).reshape(-1), minlength=x.size)
  d_b = close(y_im2col, y_loops, "im2col vs direct")
  d_b2 = close(jitted(ops.conv, jnp.asarray(ex.x), jnp.asarray(w), impl="im2col", padding="VALID")[0],
               y_im2col, "ops.conv(im2col) vs P @ K")
  doc(f"**(b) im2col.** Copy each neighbourhood into a row of a patch matrix P "
      f"({P.shape[0]} output pixels x {P.shape[1]} taps) and reshape the filter into a column K "
      f"({K.shape[0]} x {K.shape[1]}); then y = P K is one dense matrix product, the form BLAS and GPUs "
      f"are fast at. The price is memory: P has {P.size} entries for {x.size} pixels, each pixel copied "
      f"{copies.mean():.2f} times on average ({copies.min()} at a corner, {copies.max()} in the centre). Equal to (a) (max difference {d_b:.1g}; "
      f"`ops.conv(impl='im2col')` {d_b2:.1g}):")
  doc.code(explain_output.side_by_side([("P", mat(P)), ("K", mat(K)), ("P @ K", mat(P @ K))], gap=3))

  # (c) the sparse matrix
  Wm = ops.conv_matrix(jnp.asarray(w), ex.x.shape[1:], padding="VALID")
  Wd, S = teach.conv_matrix_dense(ex)
  y_matrix = np.asarray(Wm @ jnp.asarray(x.reshape(-1))).reshape(y_loops.shape)
  d_c = close(y_matrix, y_im2col, "W @ x vs im2col")
  d_c2 = close(jitted(ops.conv, jnp.asarray(ex.x), jnp.asarray(w), impl="matrix", padding="VALID")[0],
               y_matrix, "ops.conv(matrix) vs W @ x")
  nnz = int(S.sum())
  doc(f"**(c) A sparse matrix.** Convolution is linear in x, so with x flattened row by row into a "
      f"vector of length {x.size}, y = W x for a fixed W of shape {Wd.shape[0]} x {Wd.shape[1]} "
      f"(`ops.conv_matrix`, a `jax.experimental.sparse.BCOO`). Each row holds the same 9 filter "
      f"coefficients, shifted: {nnz} stored entries out of {Wd.size} (density {nnz / Wd.size:.2f}), "
      f"and only {w.size} distinct values: parameter sharing. '.' marks a structural zero; a printed 0 "
      f"is a filter coefficient that happens to be zero. Equal to (b) "
      f"(max difference {d_c:.1g}; `ops.conv(impl='matrix')` {d_c2:.1g}):")
  doc.code(explain_output.format_matrix(Wd, structure=S, group=x.shape[1],
                               row_labels=[f"y[{i},{j}]" for i in range(3) for j in range(3)]))

  # (d) lax.conv
  y_lax = np.asarray(lax.conv_general_dilated(jnp.asarray(ex.x), jnp.asarray(w), (1, 1), "VALID",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")))[0]
  d_d = close(y_lax, y_matrix, "lax.conv vs W @ x")
  d_d2 = close(jitted(ops.conv, jnp.asarray(ex.x), jnp.asarray(w), impl="lax", padding="VALID")[0],
               y_lax, "ops.conv(lax) vs lax.conv")
  doc(f"**(d) `lax.conv_general_dilated`**, XLA's convolution, gives the same numbers "
      f"(max difference to (c) {d_d:.1g}; `ops.conv(impl='lax')` {d_d2:.1g}). They are the output "
      f"matrix of the lecture's slide:")
  doc.code(mat(y_lax[..., 0]))

  # The same chain on a bigger case: channels, stride, SAME padding.
  rng = np.random.default_rng(0)
  xb = rng.normal(size=(1, 7, 6, 2)).astype(np.float32)
  wb = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
  exb = teach.Example(x=xb, w=wb, stride=(2, 2), padding="SAME")
  yl = conv_loops(xb[0], wb, exb.stride, exb.pads)
  yi = (teach.im2col_patches(exb) @ wb.reshape(-1, 3)).reshape(yl.shape)
  Wb, Sb = teach.conv_matrix_dense(exb)
  ym = (Wb @ xb[0].reshape(-1)).reshape(yl.shape)
  yx = jitted(ops.conv, jnp.asarray(xb), jnp.asarray(wb), stride=2, padding="SAME")[0]
  diffs = [close(yi, yl, "im2col vs loops (channels)", 1e-4), close(ym, yi, "matrix vs im2col (channels)", 1e-4),
           close(yx, ym, "lax vs matrix (channels)", 1e-4)]
  doc()
  doc(f"The same chain with channels, stride and padding (input {xb.shape[1]}x{xb.shape[2]}x{xb.shape[3]}, "
      f"kernel {'x'.join(map(str, wb.shape))}, stride 2, SAME, random values): W is "
      f"{Wb.shape[0]} x {Wb.shape[1]} with {int(Sb.sum())} stored entries (density {Sb.mean():.3f}); "
      f"each output pixel's {wb.shape[-1]} rows hold a {wb.shape[0]}x{wb.shape[1]}x{wb.shape[2]} block "
      f"per output channel. Max differences loops→im2col→matrix→lax: "
      + ", ".join(f"{d:.1g}" for d in diffs) + ".")
  doc()


def section_lecture_matrices(doc: Doc, out: str, plt) -> None:
  doc("## 2. The lecture's filter matrices")
  doc()
  n = 8
  rows = []
  fig, axes = plt.subplots(1, 2, figsize=(10, 5))
  for ax, name in zip(axes, ("smooth", "diff")):
    k = teach.KERNELS[name]
    ex = teach.Example(x=np.zeros((1, n, n, 1), np.float32), w=k[:, :, None, None], padding="SAME")
    Wd, S = teach.conv_matrix_dense(ex)
    explain_output.spy(ax, Wd, S, f"{name} {fmt_kernel(k)}: W {Wd.shape[0]}x{Wd.shape[1]}")
    rows.append((f"`{name}` {fmt_kernel(k)}", f"{Wd.shape[0]} x {Wd.shape[1]}", int(S.sum()),
                 f"{S.mean():.4f}", f"{S.sum() / Wd.shape[0]:.2f}"))
    # A 1x3 filter on a row-major image is tridiagonal in blocks: entries only at |i - j| <= 1.
    i, j = np.nonzero(S)
    assert np.all(np.abs(i - j) <= 1)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "filter_matrices.png"), dpi=90)
  plt.close(fig)
  doc(f"Figure 2.1 of the 002_* lecture shows the matrices of the 1/4 [1, 2, 1] smoothing filter and "
      f"the [1, 0, -1] difference filter applied along the rows of an image. Here on a {n}x{n} image "
      f"with zero padding (SAME): a band of three diagonals, broken where a row of the image ends "
      f"(the filter does not wrap around to the next row).")
  doc()
  doc.table(["filter", "W shape", "stored entries", "density", "per row"], rows)
  doc("![sparsity of the [1,2,1]/4 and [1,0,-1] matrices](filter_matrices.png)")
  doc()
  # 002_*: "why convolution?" -- a dense layer on a megapixel image versus 100 3x3 filters.
  x = jax.ShapeDtypeStruct((1, 1000 * 1000), jnp.float32)
  dense = jax.eval_shape(layers.Dense(100).init, jax.random.key(0), x)["params"]
  img = jax.ShapeDtypeStruct((1, 1000, 1000, 1), jnp.float32)
  conv = jax.eval_shape(layers.Conv(100, (3, 3)).init, jax.random.key(0), img)["params"]
  dk, db = math.prod(dense["kernel"].shape), math.prod(dense["bias"].shape)
  ck, cb = math.prod(conv["kernel"].shape), math.prod(conv["bias"].shape)
  ex = teach.Example(x=np.zeros((1, 1000, 1000, 1), np.float32), w=np.zeros((3, 3, 1, 100), np.float32),
                     padding="SAME")
  oh, ow = ex.out_hw
  w_rows, w_cols = oh * ow * 100, 1000 * 1000
  doc(f"Why convolution (002_*): a dense layer from a 1000x1000 image to 100 nodes has "
      f"{dk:,} weights + {db} biases; a convolutional layer with 100 filters of 3x3 has {ck:,} weights "
      f"+ {cb} biases. As a matrix that conv layer is {w_rows:,} x {w_cols:,} but has at most "
      f"{w_rows * 9:,} stored entries, made of {ck:,} distinct values.")
  doc()


def fmt_kernel(k) -> str:
  vals = explain_output.fmt_values(k)
  return "[" + ", ".join(vals) + "]"


def section_transpose(doc: Doc) -> None:
  doc("## 3. The transposed convolution is W^T")
  doc()
  n, k, s = 8, 3, 2
  rng = np.random.default_rng(1)
  w = rng.normal(size=(k, k, 1, 1)).astype(np.float32)
  ex = teach.Example(x=rng.normal(size=(1, n, n, 1)).astype(np.float32), w=w, stride=(s, s), padding="SAME")
  Wd, S = teach.conv_matrix_dense(ex)
  oh, ow = ex.out_hw
  y = rng.normal(size=(1, oh, ow, 1)).astype(np.float32)
  wty = (Wd.T @ y.reshape(-1)).reshape(n, n)
  tconv = jitted(ops.conv_transpose, jnp.asarray(y), jnp.asarray(w), stride=s, padding="SAME")[0, ..., 0]
  _, vjp = jax.vjp(lambda v: ops.conv(v, jnp.asarray(w), stride=s, padding="SAME"), jnp.asarray(ex.x))
  grad = np.asarray(vjp(jnp.asarray(y))[0])[0, ..., 0]
  Wm = ops.conv_matrix(jnp.asarray(w), (n, n, 1), stride=s, padding="SAME")
  wty_sparse = np.asarray(Wm.T @ jnp.asarray(y.reshape(-1))).reshape(n, n)
  d1 = close(tconv, wty, "conv_transpose vs W^T y", 1e-4)
  d2 = close(grad, wty, "vjp vs W^T y", 1e-4)
  d3 = close(wty_sparse, wty, "BCOO .T vs dense W^T", 1e-4)
  for impl in ops.CONV_TRANSPOSE_IMPLS:
    if impl != "pallas":
      close(jitted(ops.conv_transpose, jnp.asarray(y), jnp.asarray(w), stride=s, padding="SAME",
                                          impl=impl)[0, ..., 0], wty, f"conv_transpose({impl})", 1e-4)
  doc(f"A stride-{s} {k}x{k} convolution with SAME padding maps an {n}x{n} image to {oh}x{ow}: W is "
      f"{Wd.shape[0]} x {Wd.shape[1]}, a wide matrix that *downsamples*. Its transpose W^T is "
      f"{Wd.shape[1]} x {Wd.shape[0]}: it takes {oh}x{ow} values to {n}x{n}, so it *upsamples*. "
      f"That is all a transposed convolution (\"deconvolution\", Keras' `Conv2DTranspose`) is: "
      f"`ops.conv_transpose(y, w, stride={s})` equals W^T y (max difference {d1:.1g}), equals the "
      f"gradient of the convolution with respect to its input, `jax.vjp` (max difference {d2:.1g}), "
      f"and equals the BCOO matrix's own `.T` (max difference {d3:.1g}); every non-Pallas "
      f"implementation ({', '.join(i for i in ops.CONV_TRANSPOSE_IMPLS if i != 'pallas')}) agrees.")
  doc()
  doc("Column j of W^T (= row j of W) is where input pixel j of the transposed convolution goes: a copy "
      f"of the {k}x{k} kernel, placed every {s} pixels. Copies of neighbouring pixels overlap, and how "
      f"many copies land on an output pixel depends on its position modulo the stride. The number of "
      f"stored entries in each row of W^T (contributions per output pixel):")
  contrib = S.sum(axis=0).reshape(n, n).astype(int)
  doc.code(mat(contrib))
  interior = contrib[2:-2, 2:-2]
  counts = sorted({int(v) for v in interior.reshape(-1)})
  assert len(counts) > 1       # uneven overlap: the origin of the checkerboard
  doc(f"Away from the border the counts are {', '.join(map(str, counts))}: a {s}x{s}-periodic pattern. "
      "Any kernel that is not specially balanced turns it into a visible checkerboard.")
  doc()


def phase_artifact(out: np.ndarray, border: int = 2) -> tuple[float, np.ndarray]:
  """The 2x2-periodic part of an image: std of the four phase means over the RMS of the interior.

  For the upsampled image of a constant input, an artifact-free result is
  constant away from the border, so this is 0.
  """
  a = out[border:out.shape[0] - border, border:out.shape[1] - border]
  a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2]
  phases = np.array([[a[i::2, j::2].mean() for j in range(2)] for i in range(2)])
  rms = float(np.sqrt(np.mean(a ** 2))) or 1.0
  return float(phases.std() / rms), phases


@jax.jit
def resize_conv(x, w):
  """Nearest-neighbour upsampling by 2, then a stride-1 SAME convolution (Odena et al. 2016)."""
  up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return ops.conv(up, w, padding="SAME")


def section_checkerboard(doc: Doc, out: str, plt) -> None:
  doc("## 4. Checkerboard artifacts: transposed convolution versus resize-convolution")
  doc()
  n = 12
  x = jnp.ones((1, n, n, 1), jnp.float32)
  rng = np.random.default_rng(2)
  cases = [("ones 3x3", np.ones((3, 3, 1, 1), np.float32)),
           ("ones 4x4", np.ones((4, 4, 1, 1), np.float32))]
  rand3 = [rng.uniform(0.0, 1.0, size=(3, 3, 1, 1)).astype(np.float32) for _ in range(8)]
  rand4 = [rng.uniform(0.0, 1.0, size=(4, 4, 1, 1)).astype(np.float32) for _ in range(8)]
  rows, images = [], {}
  for label, w in cases:
    t = jitted(ops.conv_transpose, x, jnp.asarray(w), stride=2, padding="SAME")[0, ..., 0]
    r = np.asarray(resize_conv(x, jnp.asarray(w)))[0, ..., 0]
    at, ph = phase_artifact(t)
    ar, _ = phase_artifact(r)
    rows.append((f"{label}", f"{t.shape[0]}x{t.shape[1]}", f"{at:.3f}", f"{ar:.3f}",
                 " / ".join(explain_output.fmt_values(ph))))
    images[label] = (t, r)
  for label, ws in (("8 random 3x3 in [0, 1)", rand3), ("8 random 4x4 in [0, 1)", rand4)):
    at = [phase_artifact(jitted(ops.conv_transpose, x, jnp.asarray(w), stride=2, padding="SAME")[0, ..., 0])[0]
          for w in ws]
    ar = [phase_artifact(np.asarray(resize_conv(x, jnp.asarray(w)))[0, ..., 0])[0] for w in ws]
    rows.append((label + " (mean)", f"{2 * n}x{2 * n}", f"{np.mean(at):.3f}", f"{np.mean(ar):.3f}", ""))
    images[label] = (jitted(ops.conv_transpose, x, jnp.asarray(ws[0]), stride=2, padding="SAME")[0, ..., 0],
                     np.asarray(resize_conv(x, jnp.asarray(ws[0])))[0, ..., 0])
    assert np.mean(at) > 10 * max(np.mean(ar), 1e-6)
  t3, r3 = images["ones 3x3"]
  assert phase_artifact(t3)[0] > 0.1 and phase_artifact(r3)[0] < 1e-6
  doc(f"The 002_* lecture: transposed convolution is fast but often gives checkerboard artifacts; "
      f"resize-convolution (nearest-neighbour upsampling, then an ordinary convolution) does not. "
      f"Measured here on a constant {n}x{n} input upsampled by 2: an artifact-free result is constant "
      f"away from the border, so the *artifact* is the standard deviation of the four 2x2 phase means "
      f"of the interior divided by its RMS (0 = none).")
  doc()
  doc.table(["kernel", "output", "artifact, transposed conv", "artifact, resize-conv",
             "transposed conv phase means (00 / 01 / 10 / 11)"], rows)
  doc("With a 3x3 kernel and stride 2 the overlaps are uneven (section 3), so even an all-ones kernel "
      "gives a checkerboard. A 4x4 kernel (divisible by the stride) overlaps evenly and the all-ones "
      "kernel is clean, but a general (learned) 4x4 kernel is not: each phase sees a different subset "
      "of its taps. Resize-convolution sees the same taps everywhere, so its artifact is 0 "
      "whatever the kernel.")
  doc()
  fig, axes = plt.subplots(2, 4, figsize=(13, 6.8))
  for col, label in enumerate(("ones 3x3", "ones 4x4", "8 random 3x3 in [0, 1)", "8 random 4x4 in [0, 1)")):
    t, r = images[label]
    for row, (img, kind) in enumerate(((t, "transposed conv"), (r, "resize-conv"))):
      ax = axes[row, col]
      ax.imshow(img, cmap="gray", interpolation="nearest")
      ax.set_title(f"{kind}, {label.replace('8 random', 'random').replace(' in [0, 1)', '')}\n"
                   f"artifact {phase_artifact(img)[0]:.3f}", fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(os.path.join(out, "checkerboard.png"), dpi=90)
  plt.close(fig)
  doc("![transposed convolution vs resize-convolution on a constant image](checkerboard.png)")
  doc()


def section_pooling_table(doc: Doc) -> None:
  doc("## 5. The pooling table: parameter counts from a model")
  doc()
  import flax.linen as nn

  class PoolingTableNet(nn.Module):
    """The small classifier of the 002_* pooling table, built from jaxseg's layers."""
    pool: bool = True

    @nn.compact
    def __call__(self, x):
      x = nn.relu(layers.Conv(8, (5, 5), padding="VALID")(x))
      x = layers.MaxPool(2)(x) if self.pool else x
      x = nn.relu(layers.Conv(16, (5, 5), padding="VALID")(x))
      x = layers.MaxPool(2)(x) if self.pool else x
      x = layers.Flatten()(x)
      x = nn.relu(layers.Dense(120)(x))
      x = nn.relu(layers.Dense(84)(x))
      return nn.softmax(layers.Dense(10)(x))

  model = PoolingTableNet()
  shape = (1, 32, 32, 3)
  rows = summary.layer_rows(model, shape)
  total = summary.count_params(model, shape)
  assert sum(r.params for r in rows) == total
  table = [("Input", str((32, 32, 3)), f"{32 * 32 * 3:,}", 0, "")]
  no_pool_rows = summary.layer_rows(PoolingTableNet(pool=False), shape)
  no_pool = [r for r in no_pool_rows if r.type == "Dense"]
  no_pool_flat = [r for r in no_pool_rows if r.type == "Conv"][-1].output_shape[1:]
  prev = 32 * 32 * 3
  excess = []
  for r in rows:
    size = math.prod(r.output_shape[1:])
    slide = ""
    if r.type == "Dense":
      slide = f"{prev * size + 1:,}"      # the slide's formula: inputs x nodes + 1
      assert r.params == prev * size + size
      excess.append(r.params - (prev * size + 1))
    table.append((f"{r.type} ({r.name})", str(r.output_shape[1:]), f"{size:,}", f"{r.params:,}", slide))
    prev = size
  convs = [r for r in rows if r.type == "Conv"]
  c1 = 5 * 5 * 3 * 8 + 8
  c2 = 5 * 5 * 8 * 16 + 16
  assert [r.params for r in convs] == [c1, c2]
  doc("The 002_* lecture's table (input 32x32x3, two 5x5 VALID convolutions with 2x2 max pooling, "
      "then dense layers of 120, 84 and 10 nodes), rebuilt with `jaxseg.models.layers` and counted "
      "with `jaxseg.models.summary` (shapes through `jax.eval_shape`, nothing allocated):")
  doc()
  doc.table(["layer", "activation shape", "activation size", "# parameters (model)",
             "slide's formula, in x out + 1"], table)
  dense_rows = [r for r in rows if r.type == "Dense"]
  doc(f"Total: {total:,} parameters. The convolution rows agree with the slide's explanation "
      f"(5x5x3 x 8 + 8 = {c1:,}; 5x5x8 x 16 + 16 = {c2:,}); the pooling layers have none, and they "
      f"are what keeps the first dense layer at {dense_rows[0].params:,} parameters: the same model "
      f"without its two pooling layers flattens a {'x'.join(map(str, no_pool_flat))} activation and its first dense layer has "
      f"{no_pool[0].params:,} (the whole model {summary.count_params(PoolingTableNet(pool=False), shape):,}). The slide's dense counts use inputs x nodes + 1, one bias "
      f"per *layer*; a dense layer (Keras' and this one) has one bias per *node*, so each dense row "
      f"of the model is larger by nodes - 1: "
      + ", ".join(f"{e:,}" for e in excess) + ".")
  doc()
  # 002_*: fully convolutional networks can be trained on size A and applied to size B.
  sizes = (64, 128)
  rows = []
  for name, kw in (("fcn", {}), ("unet_small", {}), ("dense", None)):
    counts = []
    for n in sizes:
      model = models.create(name, **({"image_size": n} if kw is None else kw))
      counts.append(summary.count_params(model, (1, n, n, 1)))
    rows.append((f"`{name}`",) + tuple(f"{c:,}" for c in counts))
    assert (counts[0] == counts[1]) == (kw is not None)
  doc(f"The segmentation models of `jaxseg.models`, counted the same way for {sizes[0]}x{sizes[0]} and "
      f"{sizes[1]}x{sizes[1]} inputs (one channel, two classes). The fully convolutional ones "
      "(convolutions, pooling and transposed convolutions, no dense layer) have the same parameters "
      "at any size, so a model trained on one size applies to another; the lab's `dense` model (Task 1) needs a new, larger weight matrix for every size.")
  doc()
  doc.table(["model"] + [f"params at {n}x{n}" for n in sizes], rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "output"),
                      help="directory for walkthrough.md and its figures")
  args = parser.parse_args(argv)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(args.out, exist_ok=True)
  t0 = time.perf_counter()
  doc = Doc()
  doc("# Convolution is a sparse matrix multiplication")
  doc()
  doc("*Generated by `experiments/teach/walkthrough.py`; every number below is computed by it and "
      "every step is checked against the previous one. The same views of any example: "
      "`jaxseg explain --help`.*")
  doc()
  section_four_ways(doc)
  section_lecture_matrices(doc, args.out, plt)
  section_transpose(doc)
  section_checkerboard(doc, args.out, plt)
  section_pooling_table(doc)
  doc(f"---\nJAX {jax.__version__}, backend {jax.default_backend()}.")
  path = os.path.join(args.out, "walkthrough.md")
  with open(path, "w") as f:
    f.write(doc.text())
  print(f"wrote {path} and figures in {time.perf_counter() - t0:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
