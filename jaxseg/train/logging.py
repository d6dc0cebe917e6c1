"""Per-epoch records of a run: metrics.jsonl, metrics.csv, TensorBoard, PNG figures."""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np

COLUMNS = ("epoch", "step", "train_loss", "train_accuracy", "train_dice",
           "val_loss", "val_accuracy", "val_dice", "val_dice_per_class", "lr", "train_seconds",
           "epoch_seconds", "data_wait_seconds")


class MetricsWriter:
  """Writes one row per epoch; `rewrite(history)` restores the files on resume.

  metrics.jsonl and metrics.csv are rewritten from the checkpoint's history
  when a run resumes, so epochs finished after the last checkpoint (and
  lost with the kill) do not appear twice.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self._tb = None
    if enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # tensorboardX is a dependency, but stay usable without it
        self._tb = None

  def rewrite(self, history: list[dict]) -> None:
    if not self.enabled:
      return
    for name in ("metrics.jsonl", "metrics.csv"):
      path = os.path.join(self.workdir, name)
      if os.path.exists(path):
        os.remove(path)
    for row in history:
      self._append_files(row)

  def _append_files(self, row: dict) -> None:
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps(row) + "\n")
    path = os.path.join(self.workdir, "metrics.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
      w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
      if new:
        w.writeheader()
      # the per-class Dice as one JSON cell: {"1": d1, "2": d2, ...}
      w.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})

  def write(self, row: dict) -> None:
    if not self.enabled:
      return
    self._append_files(row)
    if self._tb is not None:
      for k, v in row.items():
        if k not in ("epoch", "step") and isinstance(v, (int, float)):
          self._tb.add_scalar(k.replace("_", "/", 1), v, row["epoch"])
        elif k == "val_dice_per_class" and len(v) > 1:
          for c, d in v.items():
            self._tb.add_scalar(f"val/dice_class_{c}", d, row["epoch"])
      self._tb.flush()

  def image(self, tag: str, rgb: np.ndarray, epoch: int) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_image(tag, rgb, epoch, dataformats="HWC")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _to_uint8(a: np.ndarray) -> np.ndarray:
  a = np.asarray(a, np.float64)
  lo, hi = np.nanmin(a), np.nanmax(a)
  return ((a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)).astype(np.uint8)


def sample_panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """Input | label | prediction side by side as one uint8 (H, 3W+2*gap) array."""
  image = image[..., 0] if image.ndim == 3 else image
  k = max(int(label.max()), int(pred.max()), 1)
  gap = np.full((image.shape[0], 4), 255, np.uint8)
  return np.concatenate([_to_uint8(image), gap, (label * (255 // k)).astype(np.uint8), gap,
                         (pred * (255 // k)).astype(np.uint8)], axis=1)


def save_sample_png(path: str, image, label, pred, *, title: str = "") -> None:
  """The lab's DisplayCallback: input image, true mask and predicted mask."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return _write_png(path, sample_panel(image, label, pred))
  image = image[..., 0] if image.ndim == 3 else image
  fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
  for ax, a, t in zip(axes, (image, label, pred), ("Input Image", "True Mask", "Predicted Mask")):
    ax.imshow(a, cmap="Greys_r")
    ax.set_title(t)
    ax.axis("off")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def save_curves_png(path: str, history: list[dict]) -> None:
  """Loss and Dice per epoch, train and val (needs matplotlib; else skipped)."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return
  ep = [r["epoch"] for r in history]
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
  a.plot(ep, [r["train_loss"] for r in history], "r", label="Training loss")
  a.plot(ep, [r["val_loss"] for r in history], "bo", label="Validation loss")
  a.set_xlabel("Epoch"); a.set_title("Loss"); a.legend()
  b.plot(ep, [r["train_dice"] for r in history], "r", label="Training Dice")
  b.plot(ep, [r["val_dice"] for r in history], "bo", label="Validation Dice")
  b.set_xlabel("Epoch"); b.set_title("Dice"); b.set_ylim(0, 1); b.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def _write_png(path: str, array: np.ndarray) -> None:
  import SimpleITK as sitk
  sitk.WriteImage(sitk.GetImageFromArray(array), path)


def progress(total: int, desc: str, *, enabled: bool):
  """A tqdm bar with ETA on stderr (a no-op object when disabled)."""
  from tqdm import tqdm
  return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False,
              dynamic_ncols=True)
