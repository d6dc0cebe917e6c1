"""Several classes and per-case scores on tiny files in real layouts (ACDC, folder)."""

import csv
import json

import jax
import numpy as np
import pytest
import SimpleITK as sitk

from jaxseg import cli, data
from jaxseg.train import checkpoint, loop
from train_helpers import tiny_config


def _write(path, array, spacing):
  path.parent.mkdir(parents=True, exist_ok=True)
  img = sitk.GetImageFromArray(array)
  img.SetSpacing(spacing)
  sitk.WriteImage(img, str(path), useCompression=True)


def _heart(rng, shape=(3, 16, 16)):
  """RV (1), myocardium ring (2) and LV cavity (3) discs that move between cases, in noise."""
  d, h, w = shape
  yy, xx = np.mgrid[0:h, 0:w]
  cy, cx = rng.integers(6, 10, size=2)
  r = np.hypot(yy - cy, xx - cx)
  gt = np.zeros(shape, np.uint8)
  gt[:, r < 5] = 2
  gt[:, r < 3] = 3
  gt[:, (np.hypot(yy - cy, xx - cx + 6) < 3) & (r >= 5)] = 1
  image = np.choose(gt, [100, 600, 300, 900]).astype(np.float32) + rng.normal(0, 30, shape)
  return image.astype(np.float32), gt


def _acdc(root, n_patients=3):
  rng = np.random.default_rng(0)
  for p in range(1, n_patients + 1):
    for f in (1, 9):
      image, gt = _heart(rng)
      stem = root / "training" / f"patient{p:03d}" / f"patient{p:03d}_frame{f:02d}"
      _write(stem.with_name(stem.name + ".nii.gz"), image, (1.4, 1.4, 8.0))
      _write(stem.with_name(stem.name + "_gt.nii.gz"), gt, (1.4, 1.4, 8.0))
  return root


def _lab_dice_per_class(pred, labels, k):
  """The lab's Dice per image (smooth 1) of each foreground class, mean over images."""
  out = {}
  for c in range(1, k):
    a, b = pred == c, labels == c
    inter = (a & b).sum(axis=(1, 2))
    out[str(c)] = float(np.mean((2 * inter + 1) / (a.sum(axis=(1, 2)) + b.sum(axis=(1, 2)) + 1)))
  return out


def test_acdc_three_classes_report_and_select_by_the_mean(tmp_path):
  root = _acdc(tmp_path / "acdc")
  spec = f"acdc:{root}?classes=rv,myo,lv"
  config = tiny_config(data=spec, num_classes=4, epochs=3, batch_size=2, val_fraction=0.34, lr=1e-2)
  result = loop.train_and_evaluate(config, str(tmp_path / "run"), quiet=True)
  history = checkpoint.Checkpoints(str(tmp_path / "run"), read_only=True).read_meta()["history"]
  for row in history:
    assert set(row["val_dice_per_class"]) == {"1", "2", "3"}
    assert row["val_dice"] == pytest.approx(np.mean(list(row["val_dice_per_class"].values())), abs=1e-12)
  means = [r["val_dice"] for r in history]
  assert result["best_epoch"] == int(np.argmax(means)) + 1 and result["best_val_dice"] == max(means)
  # the reported per-class Dice, recomputed from the final weights in NumPy
  cfg, model, params, meta = loop.restore_run(str(tmp_path / "run"))
  _, val = data.train_val(spec, num_classes=4, val_fraction=0.34, seed=0,
                          normalize=data.Normalization.from_dict(meta["normalization"]))
  assert {v.name for v in val.volumes} <= {f"patient00{p}_frame{f:02d}" for p in (1, 2, 3) for f in (1, 9)}
  logits = model.apply({"params": params}, val.images, train=False)
  mine = _lab_dice_per_class(np.asarray(logits).argmax(-1), val.labels, 4)
  for c in ("1", "2", "3"):
    assert result["val_dice_per_class"][c] == pytest.approx(mine[c], abs=1e-6)
  rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
  assert json.loads(rows[-1]["val_dice_per_class"]) == history[-1]["val_dice_per_class"]


def _brute_hd95(a, b, spacing):
  def surf(m):
    p = np.pad(m, 1)
    inner = np.ones_like(p)
    for ax in range(m.ndim):
      for s in (1, -1):
        inner &= np.roll(p, s, axis=ax)
    return m & ~inner[tuple(slice(1, -1) for _ in range(m.ndim))]
  pa, pb = np.argwhere(surf(a)) * spacing, np.argwhere(surf(b)) * spacing
  d = np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1))
  return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_evaluate_per_case_equals_predict_scored_by_hand(tmp_path, capsys):
  rng = np.random.default_rng(1)
  root = tmp_path / "f"
  spacing_xyz = (0.9, 0.9, 2.0)
  for i in range(4):
    image, gt = _heart(rng, (4, 16, 16))
    _write(root / "images" / f"case{i}.nii.gz", image, spacing_xyz)
    _write(root / "labels" / f"case{i}.nii.gz", (gt == 3).astype(np.uint8), spacing_xyz)
  work = str(tmp_path / "run")
  assert cli.main(["train", "--model", "cnn3", "--loss", "ce", "--data", f"folder:{root}", "--val-fraction",
                   "0.5", "--epochs", "3", "--batch-size", "4", "--lr", "1e-2", "--workdir", work,
                   "--normalize", "ct", "--quiet", "--json"]) == 0
  capsys.readouterr()
  # the ct statistics of the training cases are stored with the run ...
  _, _, _, meta = loop.restore_run(work)
  train, val = data.train_val(f"folder:{root}", val_fraction=0.5, seed=0, normalize="ct")
  assert meta["normalization"] == train.normalization.to_dict()
  raw = lambda kind, name: sitk.GetArrayFromImage(sitk.ReadImage(str(root / kind / f"{name}.nii.gz")))
  fg = np.concatenate([raw("images", v.name)[raw("labels", v.name) > 0] for v in train.volumes]).astype(np.float64)
  stats = meta["normalization"]
  assert stats["scheme"] == "ct" and {v.name for v in val.volumes}.isdisjoint(v.name for v in train.volumes)
  np.testing.assert_allclose([stats["clip_low"][0], stats["clip_high"][0], stats["mean"][0], stats["std"][0]],
                             [*np.percentile(fg, [0.5, 99.5]), fg.mean(), fg.std()], rtol=1e-5)
  assert cli.main(["evaluate", "--workdir", work, "--per-case", "--json"]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  names = [c["case"] for c in out["cases"]]
  assert len(names) == 2 and set(names) < {f"case{i}" for i in range(4)}
  assert out["normalization"] == meta["normalization"]
  # ... and predict, normalising each file with them, segments it as evaluate scored it
  for case in out["cases"]:
    seg = tmp_path / f"{case['case']}_seg.nii.gz"
    assert cli.main(["predict", "--workdir", work, "--checkpoint", "latest",
                     str(root / "images" / f"{case['case']}.nii.gz"), str(seg)]) == 0
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(seg))).astype(bool)
    label_image = sitk.ReadImage(str(root / "labels" / f"{case['case']}.nii.gz"))
    truth = sitk.GetArrayFromImage(label_image).astype(bool)
    spacing = np.array(label_image.GetSpacing()[::-1])  # as stored (NIfTI keeps float32)
    want_dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) if pred.sum() + truth.sum() else 1.0
    assert case["dice"]["1"] == pytest.approx(want_dice, abs=1e-12)
    if pred.any() and truth.any():
      assert case["hd95"]["1"] == pytest.approx(_brute_hd95(pred, truth, spacing), rel=1e-9)
    else:
      assert case["hd95"]["1"] is None
  assert out["mean_dice"]["1"] == pytest.approx(np.mean([c["dice"]["1"] for c in out["cases"]]))
  # without --json: a table on stdout and the same numbers in per_case.csv
  assert cli.main(["evaluate", "--workdir", work, "--per-case"]) == 0
  text = capsys.readouterr().out
  assert all(n in text for n in names) and "hd95_1_mm" in text
  rows = list(csv.DictReader(open(tmp_path / "run" / "per_case.csv")))
  assert [r["case"] for r in rows] == names
  assert [float(r["dice_1"]) for r in rows] == [c["dice"]["1"] for c in out["cases"]]
