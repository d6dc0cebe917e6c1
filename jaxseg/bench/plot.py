"""PNG plots of the sweeps (matplotlib, the optional `plot` extra)."""

from __future__ import annotations


def _pyplot():
  try:
    import matplotlib
  except ImportError:
    from jaxseg.errors import UserError
    raise UserError("--plot needs matplotlib: pip install -e '.[plot]'")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _series(rows, axis, key):
  series = {}
  for r in rows:
    if r.get("sweep") == axis and r.get(key) is not None:
      series.setdefault(r.get("impl", r.get("conv_impl")), []).append((r["value"], r[key]))
  return series


def plot_conv_sweep(rows, path, *, title=""):
  """Time and memory of each impl vs image size and vs batch; matrix nnz memory dashed."""
  plt = _pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  for col, axis in enumerate(("image_size", "batch")):
    for impl, pts in _series(rows, axis, "fwdbwd_s").items():
      axes[0, col].plot(*zip(*pts), "o-", label=impl)
    for impl, pts in _series(rows, axis, "fwdbwd_temp_mb").items():
      axes[1, col].plot(*zip(*pts), "o-", label=f"{impl} XLA temp")
    nnz = {}
    for r in rows:
      if r.get("sweep") == axis and "matrix_mb" in r:
        nnz[r["value"]] = r["matrix_mb"] * r["batch_size"]
    if nnz:
      axes[1, col].plot(sorted(nnz), [nnz[k] for k in sorted(nnz)], "k--",
                        label="conv_matrix BCOO (nnz x 12 B x batch)")
    axes[0, col].set_ylabel("fwd+bwd seconds")
    axes[1, col].set_ylabel("MB")
    for row in range(2):
      ax = axes[row, col]
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel(axis.replace("_", " "))
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=7)
  fig.suptitle(f"conv sweep: {title}")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_train_sweep(rows, path, *, title=""):
  """Step seconds and memory vs image size and vs batch."""
  plt = _pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  for col, axis in enumerate(("image_size", "batch")):
    pts = [(r["value"], r["step_seconds"]) for r in rows if r["sweep"] == axis]
    axes[0, col].plot(*zip(*pts), "o-", label="step seconds")
    for key, label in (("xla_temp_mb", "XLA temp MB"), ("peak_rss_mb", "peak RSS MB")):
      pts = [(r["value"], r[key]) for r in rows if r["sweep"] == axis and r.get(key) is not None]
      if pts:
        axes[1, col].plot(*zip(*pts), "o-", label=label)
    for row in range(2):
      ax = axes[row, col]
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel(axis.replace("_", " "))
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
