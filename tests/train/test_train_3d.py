"""3-D end to end through the command line: a folder of odd-sized anisotropic
volumes trains on patches, and `predict` on a volume of another odd size and a
rotated direction writes a segmentation with the input's geometry that scores
as well as validation did.

The task is learnable in a few dozen steps on tiny shapes (bright ellipsoids
in a noisy body); the figures compared are the run's own validation Dice and
the Dice of `predict`'s output against the truth, computed here with NumPy.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from jaxseg import cli

SPACING = (1.1, 1.1, 2.5)  # SimpleITK order (x, y, z): thick slices along the array's axis 0
ROTATED = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)


def _case(shape, seed):
  """(image, label) arrays (z, y, x): an ellipsoid of foreground, brighter than a noisy body."""
  rng = np.random.default_rng(seed)
  z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
  centre = [rng.uniform(0.35, 0.65) * n for n in shape]
  radii = [rng.uniform(0.2, 0.3) * n for n in shape]
  label = (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
           + ((x - centre[2]) / radii[2]) ** 2 <= 1).astype(np.uint8)
  image = rng.normal(100, 15, size=shape).astype(np.float32) + 60 * label
  return image, label


def _write(path, array, *, origin=(0.0, 0.0, 0.0), direction=None):
  img = sitk.GetImageFromArray(array)
  img.SetSpacing(SPACING)
  img.SetOrigin(origin)
  if direction is not None:
    img.SetDirection(direction)
  sitk.WriteImage(img, str(path))
  return img


def _dice(a, b):
  return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _run(capsys, *argv):
  status = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  return status, out.out, out.err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("odd3d")
  (root / "images").mkdir()
  (root / "labels").mkdir()
  shapes = [(11, 29, 27), (13, 27, 31), (9, 33, 25), (12, 25, 29), (10, 31, 33), (11, 27, 23)]
  for i, shape in enumerate(shapes):
    image, label = _case(shape, seed=i)
    ext = ".nrrd" if i % 2 else ".nii.gz"
    _write(root / "images" / f"c{i}{ext}", image)
    _write(root / "labels" / f"c{i}{ext}", label)
  return root


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
  work = tmp_path_factory.mktemp("run3d") / "run"
  status = cli.main([str(a) for a in (
      "train", "--model", "unet3d_small", "--data", f"folder:{folder}", "--patch-size", "8,16,16",
      "--batch-size", "2", "--epochs", "3", "--patches-per-case", "4", "--optimizer", "adam", "--lr", "3e-3",
      "--schedule", "constant", "--augment", "none", "--val-fraction", "0.34", "--overlap", "0.25",
      "--workdir", work, "--quiet")])
  assert status == 0
  return work


def test_odd_sized_anisotropic_volumes_train_on_patches_and_predict_keeps_geometry(trained, tmp_path, capsys):
  work = trained
  status, out, err = _run(capsys, "evaluate", "--workdir", work, "--checkpoint", "best", "--json")
  assert status == 0, err
  val_dice = json.loads(out.strip().splitlines()[-1])["val_dice"]
  assert val_dice >= 0.8, val_dice  # it learnt the task (a constant guess scores < 0.3 here)

  # A volume of another odd size, rotated and moved: the output has its geometry.
  image, label = _case((9, 35, 21), seed=99)
  src = _write(tmp_path / "new.nrrd", image, origin=(4.0, -3.0, 7.5), direction=ROTATED)
  status, out, err = _run(capsys, "predict", "--workdir", work, tmp_path / "new.nrrd", tmp_path / "seg.nii.gz")
  assert status == 0, err
  seg = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
  assert seg.GetSize() == src.GetSize()
  np.testing.assert_allclose(seg.GetSpacing(), src.GetSpacing(), rtol=1e-6)
  np.testing.assert_allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-5)
  np.testing.assert_allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)
  got = sitk.GetArrayFromImage(seg)
  assert got.shape == label.shape
  assert _dice(got == 1, label == 1) >= val_dice - 0.05, (_dice(got == 1, label == 1), val_dice)


def test_evaluate_reproduces_the_validation_of_training_and_takes_overlap_and_mirror(trained, capsys):
  """By default evaluate uses the run's own --overlap (0.25 here), so it gives training's best val Dice."""
  work = trained
  history = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
  best = max(h["val_dice"] for h in history if "val_dice" in h)
  status, out, err = _run(capsys, "evaluate", "--workdir", work, "--checkpoint", "best", "--json")
  assert status == 0, err
  assert abs(json.loads(out.strip().splitlines()[-1])["val_dice"] - best) < 1e-5
  status, out, err = _run(capsys, "evaluate", "--workdir", work, "--checkpoint", "best", "--json",
                          "--overlap", "0.5", "--mirror")
  assert status == 0, err
  mirrored = json.loads(out.strip().splitlines()[-1])["val_dice"]
  assert mirrored > 0.75 and mirrored != best  # other windows and flips: another (close) figure
  status, _, err = _run(capsys, "evaluate", "--workdir", work, "--overlap", "1")
  assert status == 2 and "--overlap" in err and len(err.strip().splitlines()) == 1


def test_train_overlap_outside_0_1_is_a_one_line_error(tmp_path, capsys):
  status, _, err = _run(capsys, "train", "--model", "unet3d_small", "--overlap", "1", "--workdir", tmp_path / "r")
  assert status == 2 and "--overlap" in err and len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "r" / "checkpoints").exists()

