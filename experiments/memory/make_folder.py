"""Writes a folder:PATH data set of N uncompressed NIfTI volumes (D, H, W) with an ellipsoid label each.

    .venv/bin/python experiments/memory/make_folder.py OUT --cases 200 --shape 64,200,200

Used by `run.sh` to train on a data set larger than the memory the run is allowed.
"""

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def case(shape, rng):
  z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
  c = [rng.uniform(0.35, 0.65) * n for n in shape]
  r = [rng.uniform(0.15, 0.25) * n for n in shape]
  label = (((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1).astype(np.uint8)
  image = rng.normal(100, 15, size=shape).astype(np.float32)
  image += 60 * label
  return image, label


def main():
  p = argparse.ArgumentParser()
  p.add_argument("out")
  p.add_argument("--cases", type=int, default=200)
  p.add_argument("--shape", default="64,200,200")
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  shape = tuple(int(s) for s in a.shape.split(","))
  out = Path(a.out)
  (out / "images").mkdir(parents=True, exist_ok=True)
  (out / "labels").mkdir(parents=True, exist_ok=True)
  total = 0
  for i in range(a.cases):
    image, label = case(shape, np.random.default_rng([a.seed, i]))
    for name, arr in (("images", image), ("labels", label)):
      img = sitk.GetImageFromArray(arr)
      img.SetSpacing((1.0, 1.0, 2.5))
      sitk.WriteImage(img, str(out / name / f"case{i:04d}.nii"))
    total += image.nbytes + label.nbytes
  print(f"{a.cases} cases of {shape}: {total / 2**30:.2f} GiB as arrays in {out}")


if __name__ == "__main__":
  main()
