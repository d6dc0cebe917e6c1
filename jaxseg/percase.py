"""Per-case scores: Dice and HD95 in mm of every foreground class on whole cases.

A case is scored as a whole (a volume, or a 2-D image) in its own spacing.

- Dice: ``2|A∩B| / (|A| + |B|)`` over the case's voxels, no smoothing.
- HD95: the surface of a mask is its voxels that have a 6-neighbour (4 in
  2-D) outside it or lie on the image border; the directed distances from
  every surface voxel of A to the nearest surface voxel of B (in mm, with the
  case's spacing, via SciPy's exact Euclidean distance transform) and from B
  to A each have a 95th percentile (NumPy's linear interpolation); HD95 is
  the larger of the two.

Empty masks (the policy, the same as MONAI's and the Medical Segmentation
Decathlon's conventions where they agree):

- prediction and truth both empty: Dice 1, HD95 0 (nothing to find, nothing
  found);
- exactly one empty: Dice 0, HD95 undefined (``None`` in JSON, empty in the
  CSV, "-" in the table): there is no surface to measure to. Means over cases
  skip undefined HD95 values and report how many were skipped.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage


def surface(mask: np.ndarray) -> np.ndarray:
  """Boolean surface voxels of a mask (face-connected erosion; the border counts)."""
  mask = np.asarray(mask, bool)
  if not mask.any():
    return mask
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def directed_surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
  """mm from each surface voxel of mask ``a`` to the nearest surface voxel of mask ``b`` (both non-empty)."""
  sa, sb = surface(a), surface(b)
  to_b = ndimage.distance_transform_edt(~sb, sampling=tuple(float(s) for s in spacing))
  return to_b[sa]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
  """Dice of two boolean masks; 1.0 when both are empty."""
  pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
  total = int(pred.sum()) + int(truth.sum())
  return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float | None:
  """The 95% Hausdorff distance in mm; 0.0 if both masks are empty, None if one is."""
  pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
  if pred.shape != truth.shape or len(spacing) != pred.ndim:
    raise ValueError(f"hd95: shapes {pred.shape}, {truth.shape} and spacing {tuple(spacing)} differ")
  p, t = pred.any(), truth.any()
  if not p and not t:
    return 0.0
  if not (p and t):
    return None
  return float(max(np.percentile(directed_surface_distances(pred, truth, spacing), 95),
                   np.percentile(directed_surface_distances(truth, pred, spacing), 95)))


def case_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], num_classes: int) -> dict:
  """{"dice": {"1": d, ...}, "hd95": {"1": mm or None, ...}} for classes 1..num_classes-1."""
  out = {"dice": {}, "hd95": {}}
  for c in range(1, max(int(num_classes), 2)):
    out["dice"][str(c)] = dice(pred == c, truth == c)
    out["hd95"][str(c)] = hd95(pred == c, truth == c, spacing)
  return out


def summarize(cases: list[dict]) -> dict:
  """Means over cases per class (HD95 over the cases where it is defined)."""
  if not cases:
    return {"mean_dice": {}, "mean_hd95": {}, "hd95_undefined": {}}
  classes = list(cases[0]["dice"])
  mean_dice = {c: float(np.mean([r["dice"][c] for r in cases])) for c in classes}
  mean_hd, undefined = {}, {}
  for c in classes:
    values = [r["hd95"][c] for r in cases if r["hd95"][c] is not None]
    mean_hd[c] = float(np.mean(values)) if values else None
    undefined[c] = len(cases) - len(values)
  return {"mean_dice": mean_dice, "mean_hd95": mean_hd, "hd95_undefined": undefined}


def format_table(cases: list[dict], summary: dict) -> str:
  """One row per case: Dice and HD95 (mm) of every class, then the means."""
  classes = list(cases[0]["dice"]) if cases else []
  cell = lambda v, f: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)
  header = ["case"] + [f"dice_{c}" for c in classes] + [f"hd95_{c}_mm" for c in classes]
  rows = [[r["case"]] + [cell(r["dice"][c], "{:.4f}") for c in classes]
          + [cell(r["hd95"][c], "{:.2f}") for c in classes] for r in cases]
  rows.append(["mean"] + [cell(summary["mean_dice"][c], "{:.4f}") for c in classes]
              + [cell(summary["mean_hd95"][c], "{:.2f}") for c in classes])
  widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
  line = lambda xs: "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(xs, widths)))
  return "\n".join([line(header)] + [line(r) for r in rows])


def write_csv(path: str, cases: list[dict]) -> None:
  """case, dice_<c>..., hd95_<c>_mm... (an undefined HD95 is an empty cell)."""
  import csv
  classes = list(cases[0]["dice"]) if cases else []
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["case"] + [f"dice_{c}" for c in classes] + [f"hd95_{c}_mm" for c in classes])
    for r in cases:
      w.writerow([r["case"]] + [r["dice"][c] for c in classes]
                 + ["" if r["hd95"][c] is None else r["hd95"][c] for c in classes])
