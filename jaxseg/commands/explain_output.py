"""The text and figures of `jaxseg explain`: the views of `jaxseg.teach.explain` printed and drawn.

`report` is what the command prints, `summary` its `--json` line, `figures`
the PNGs of `--out`. `format_matrix`, `side_by_side`, `fmt_values` and `spy`
are also what experiments/teach/walkthrough.py prints and draws with. NumPy
here; matplotlib only inside the figure functions.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxseg import teach
from jaxseg.teach import Example

# ---------------------------------------------------------------- text

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
  os.makedirs(out_dir, exist_ok=True)
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
  mats = teach.conv_matrices_dense(ex.w, ex.x.shape[1:], tuple((e.stride, e.padding) for e in configs.values()),
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
