"""Writes the MNI152 2009 T1 template, split by axial slabs, as two `folder:` data sets.

The nilearn wheel (PyPI) ships the ICBM 2009a symmetric template (1 mm,
197 x 233 x 189, brain-masked T1) with its tissue probability maps. The label
is gray matter: the GM map (0..255) >= 128. Training slab: axial slices
z = 35..94 (array axis 0); validation slab: z = 100..139, i.e. other anatomy
5 slices away. Each slab is one NIfTI case in `OUT/train` and `OUT/val`.

The data is fetched with `pip download nilearn==0.14.1 --no-deps` (or taken
from an installed nilearn) and never committed. Also prints, and writes to
`OUT/threshold.json`, the baseline: one global intensity threshold (x > t or
x < t) chosen for the best Dice on the training slab, and the two-threshold
band (t1 < x < t2) for reference, each scored on the validation slab as one
volume and as the mean of per-slice Dice with smooth 1 (the `val_dice` that
`jaxseg train` reports).

    python experiments/real/make_mni.py --out /tmp/mni
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import SimpleITK as sitk

WHEEL = "nilearn==0.14.1"
T1 = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
GM = "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
TRAIN_SLAB = (35, 95)
VAL_SLAB = (100, 140)


def fetch(dest: str) -> tuple[sitk.Image, sitk.Image]:
  try:
    import nilearn  # noqa: F401 - an installed copy has the same files
    base = os.path.dirname(os.path.dirname(nilearn.__file__))
    return sitk.ReadImage(os.path.join(base, T1)), sitk.ReadImage(os.path.join(base, GM))
  except ImportError:
    pass
  subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-q", "-d", dest], check=True)
  wheel = next(os.path.join(dest, f) for f in os.listdir(dest) if f.endswith(".whl"))
  with zipfile.ZipFile(wheel) as z:
    z.extract(T1, dest)
    z.extract(GM, dest)
  return sitk.ReadImage(os.path.join(dest, T1)), sitk.ReadImage(os.path.join(dest, GM))


def slab(image: sitk.Image, lo: int, hi: int) -> sitk.Image:
  """Axial slices lo..hi-1 (array axis 0 = SimpleITK's z) with their geometry."""
  return image[:, :, lo:hi]


def dice_volume(pred, truth) -> float:
  return 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())


def dice_slices(pred, truth) -> float:
  inter = (pred & truth).sum(axis=(1, 2))
  return float(np.mean((2 * inter + 1) / (pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2)) + 1)))


def thresholds(x_train, y_train, x_val, y_val) -> dict:
  """The best rules on the training slab by Dice, from per-intensity voxel counts."""
  values, index = np.unique(x_train, return_inverse=True)
  every = np.bincount(index.ravel(), minlength=len(values)).astype(np.float64)
  fg = np.bincount(index.ravel(), weights=y_train.ravel().astype(np.float64), minlength=len(values))
  cum_all, cum_fg = np.concatenate([[0], np.cumsum(every)]), np.concatenate([[0], np.cumsum(fg)])
  n_fg = fg.sum()
  # x > values[i]: voxels of values i+1..; x < values[i]: voxels of values ..i-1
  above = 2 * (n_fg - cum_fg[1:]) / (cum_all[-1] - cum_all[1:] + n_fg)
  below = 2 * cum_fg[:-1] / (cum_all[:-1] + n_fg)
  i_above, i_below = int(np.argmax(above)), int(np.argmax(below))
  if above[i_above] >= below[i_below]:
    t, sign, train_dice = float(values[i_above]), ">", float(above[i_above])
  else:
    t, sign, train_dice = float(values[i_below]), "<", float(below[i_below])
  pred = x_val > t if sign == ">" else x_val < t
  one = {"rule": f"x {sign} {t:g}", "train_dice": train_dice, "val_dice_volume": dice_volume(pred, y_val),
         "val_dice_slices": dice_slices(pred, y_val)}
  # lo < x < hi: voxels of values i+1..j-1
  inter = cum_fg[None, :-1] - cum_fg[1:, None]           # [i, j] = fg in values i+1..j-1
  count = cum_all[None, :-1] - cum_all[1:, None]
  band = np.where(count > 0, 2 * inter / (count + n_fg), -1.0)
  i, j = np.unravel_index(int(np.argmax(band)), band.shape)
  lo, hi = float(values[i]), float(values[j])
  pred = (x_val > lo) & (x_val < hi)
  two = {"rule": f"{lo:g} < x < {hi:g}", "train_dice": float(band[i, j]),
         "val_dice_volume": dice_volume(pred, y_val), "val_dice_slices": dice_slices(pred, y_val)}
  return {"one_threshold": one, "band": two}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="directory for train/ and val/ (folder: data sets)")
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    t1, gm = fetch(tmp)
    label = sitk.Cast(sitk.BinaryThreshold(gm, 128, 255, 1, 0), sitk.sitkUInt8)
    label.CopyInformation(gm)
    for split, (lo, hi) in (("train", TRAIN_SLAB), ("val", VAL_SLAB)):
      for kind, img in (("images", t1), ("labels", label)):
        os.makedirs(os.path.join(args.out, split, kind), exist_ok=True)
        sitk.WriteImage(slab(img, lo, hi), os.path.join(args.out, split, kind, f"mni152_{split}.nii.gz"))
  x = sitk.GetArrayFromImage(t1).astype(np.float32)
  y = sitk.GetArrayFromImage(label).astype(bool)
  result = thresholds(x[slice(*TRAIN_SLAB)], y[slice(*TRAIN_SLAB)], x[slice(*VAL_SLAB)], y[slice(*VAL_SLAB)])
  result |= {"train_slab": TRAIN_SLAB, "val_slab": VAL_SLAB, "source": WHEEL,
             "gm_fraction_val": float(y[slice(*VAL_SLAB)].mean())}
  with open(os.path.join(args.out, "threshold.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
