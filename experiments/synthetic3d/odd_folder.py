"""The issue-18 check at its own sizes: odd-sized anisotropic volumes, --patch-size 16,48,48, and
`predict` on a volume of another odd size and a rotated direction.

    PYTHONPATH=$PWD .venv/bin/python experiments/synthetic3d/odd_folder.py /tmp/odd3d

Writes a folder: data set of 12 volumes of sizes around 23x59x57 (D, H, W) at 1.1 x 1.1 x 2.5 mm
(bright ellipsoids in a noisy body, as tests/train/test_train_3d.py at larger sizes), trains
unet3d_small on it through the command, predicts a 27x61x49 volume rotated 90 degrees about y with
another origin, and prints the geometry check and the Dice of the prediction beside the run's val
Dice.
"""

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from jaxseg import cli

SPACING = (1.1, 1.1, 2.5)
ROTATED = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)


def case(shape, seed):
  rng = np.random.default_rng(seed)
  z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
  c = [rng.uniform(0.35, 0.65) * n for n in shape]
  r = [rng.uniform(0.2, 0.3) * n for n in shape]
  label = (((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1).astype(np.uint8)
  return rng.normal(100, 15, size=shape).astype(np.float32) + 60 * label, label


def write(path, array, origin=(0.0, 0.0, 0.0), direction=None):
  img = sitk.GetImageFromArray(array)
  img.SetSpacing(SPACING)
  img.SetOrigin(origin)
  if direction is not None:
    img.SetDirection(direction)
  sitk.WriteImage(img, str(path))
  return img


def main(root):
  root = Path(root)
  for sub in ("images", "labels"):
    (root / "data" / sub).mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(12):
    shape = (int(rng.integers(21, 26)), int(rng.integers(55, 64)), int(rng.integers(53, 62)))
    image, label = case(shape, i)
    ext = ".nrrd" if i % 2 else ".nii.gz"
    write(root / "data" / "images" / f"c{i:02d}{ext}", image)
    write(root / "data" / "labels" / f"c{i:02d}{ext}", label)
  run = root / "run"
  argv = ["train", "--model", "unet3d_small", "--data", f"folder:{root / 'data'}", "--patch-size", "16,48,48",
          "--epochs", "8", "--patches-per-case", "2", "--val-fraction", "0.25", "--workdir", str(run),
          "--overwrite", "--json"]
  print("jaxseg " + " ".join(argv), flush=True)
  assert cli.main(argv) == 0
  val = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_dice"]
  image, label = case((27, 61, 49), 99)
  src = write(root / "new.nrrd", image, origin=(4.0, -3.0, 7.5), direction=ROTATED)
  argv = ["predict", "--workdir", str(run), str(root / "new.nrrd"), str(root / "seg.nii.gz")]
  print("jaxseg " + " ".join(argv), flush=True)
  assert cli.main(argv) == 0
  seg = sitk.ReadImage(str(root / "seg.nii.gz"))
  same = (seg.GetSize() == src.GetSize() and np.allclose(seg.GetSpacing(), src.GetSpacing())
          and np.allclose(seg.GetOrigin(), src.GetOrigin()) and np.allclose(seg.GetDirection(), src.GetDirection()))
  got = sitk.GetArrayFromImage(seg) == 1
  dice = 2 * (got & (label == 1)).sum() / (got.sum() + (label == 1).sum())
  print(json.dumps({"val_dice_last_epoch": val, "predict_dice": float(dice), "geometry_kept": bool(same),
                    "size": list(src.GetSize()), "spacing": list(src.GetSpacing()),
                    "direction": list(src.GetDirection())}))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/odd3d")
