"""Writers of tiny data sets in the real on-disk layouts (for the data tests)."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk


class Layouts:
  """Static helpers; every image goes to disk through SimpleITK."""

  @staticmethod
  def image(path, array, *, vector=False, spacing=None, origin=None, direction=None, gz=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.asarray(array), isVector=vector)
    if spacing is not None:
      img.SetSpacing(spacing)
    if origin is not None:
      img.SetOrigin(origin)
    if direction is not None:
      img.SetDirection(direction)
    sitk.WriteImage(img, str(path), useCompression=path.name.endswith(".gz") if gz is None else gz)
    return path

  @staticmethod
  def dicom(path, array2d, instance):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.asarray(array2d, np.int16))
    img.SetMetaData("0008|0060", "MR")
    img.SetMetaData("0020|0013", str(instance))
    sitk.WriteImage(img, str(path))
    return path

  @staticmethod
  def contour(path, points):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.2f} {y:.2f}\n" for x, y in points))
    return path

  @staticmethod
  def sunnybrook(root, cases):
    """cases: {case: (series, {number: (image2d, contour points)})}; real folder names."""
    root = Path(root)
    for case, (series, frames) in cases.items():
      toks = case.split("-")
      padded = "-".join(t.zfill(2) if t.isdigit() else t for t in toks)  # SC-HF-I-1 -> SC-HF-I-01
      for number, (img, pts) in frames.items():
        Layouts.dicom(root / "challenge_training" / case / f"IM-{series}-{number:04d}.dcm", img, number)
        Layouts.contour(root / "Sunnybrook Cardiac MR Database ContoursPart3" / "TrainingDataContours"
                        / padded / "contours-manual" / "IRCCI-expert"
                        / f"IM-0001-{number:04d}-icontour-manual.txt", pts)
    return root


@pytest.fixture
def layouts():
  return Layouts


def zscore(slices):
  """Per-slice z-score reference, float64 then float32."""
  x = np.asarray(slices, np.float64)
  mean = x.mean(axis=(-2, -1), keepdims=True)
  std = x.std(axis=(-2, -1), keepdims=True)
  return ((x - mean) / np.where(std > 1e-6, std, 1)).astype(np.float32)


@pytest.fixture
def zscore_ref():
  return zscore
