"""Normalisation schemes against NumPy written out by hand, per case; ct statistics from train only."""

import numpy as np
import pytest

from jaxseg import data
from jaxseg.data import normalization as normalize
from jaxseg.errors import ConfigError


def _volume(rng, shape=(3, 6, 5)):
  """A 'head' of nonzero values inside a zero background, plus a second channel."""
  body = np.zeros(shape, np.float32)
  body[:, 1:-1, 1:-1] = rng.normal(300, 40, size=(shape[0], shape[1] - 2, shape[2] - 2))
  return np.stack([body, body * 0.5 + 7 * (body != 0)], axis=-1)


def test_zscore_foreground_uses_nonzero_voxels_of_the_whole_case():
  rng = np.random.default_rng(0)
  x = _volume(rng)
  out = normalize.Normalization("zscore-foreground").apply(x)
  mask = np.any(x != 0, axis=-1)
  for c in range(2):
    fg = x[..., c][mask].astype(np.float64)
    want = (x[..., c].astype(np.float64) - fg.mean()) / fg.std()
    np.testing.assert_allclose(out[..., c], want, rtol=1e-5, atol=1e-5)
  # The body has mean 0 and std 1; the background is one value for every slice.
  np.testing.assert_allclose(out[..., 0][mask].mean(), 0, atol=1e-5)
  np.testing.assert_allclose(out[..., 0][mask].std(), 1, atol=1e-5)
  assert len(np.unique(out[..., 0][~mask])) == 1


def test_volume_slice_and_fixed_schemes():
  rng = np.random.default_rng(1)
  x = _volume(rng)
  x64 = x.astype(np.float64)
  vol = normalize.Normalization("zscore-volume").apply(x)
  np.testing.assert_allclose(vol, (x64 - x64.mean((0, 1, 2))) / x64.std((0, 1, 2)), rtol=1e-5, atol=1e-5)
  sl = normalize.Normalization("zscore-slice").apply(x)
  for k in range(3):
    ref = (x64[k] - x64[k].mean((0, 1))) / x64[k].std((0, 1))
    np.testing.assert_allclose(sl[k], ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(normalize.Normalization("div1024").apply(x), x * np.float32(1 / 1024))
  np.testing.assert_array_equal(normalize.Normalization("none").apply(x), x)
  # a constant case does not divide by zero
  assert np.all(normalize.Normalization("zscore-volume").apply(np.full((4, 4, 1), 5.0)) == 0)
  # old runs stored "zscore": per slice
  assert normalize.Normalization.from_dict("zscore").scheme == "zscore-slice"
  with pytest.raises(ConfigError, match="--normalize: unknown scheme 'zsore'"):
    normalize.Normalization("zsore")


def test_ct_statistics_come_from_train_foreground_and_round_trip():
  rng = np.random.default_rng(2)
  images = [rng.normal(40, 300, size=(2, 8, 8, 1)).astype(np.float32) for _ in range(3)]
  labels = [(rng.random((2, 8, 8)) < 0.3).astype(np.int32) for _ in range(3)]
  norm = normalize.fit("ct", images, labels)
  fg = np.concatenate([x[..., 0][y > 0] for x, y in zip(images, labels)]).astype(np.float64)
  lo, hi = np.percentile(fg, [0.5, 99.5])
  np.testing.assert_allclose([norm.clip_low[0], norm.clip_high[0]], [lo, hi], rtol=1e-5)
  np.testing.assert_allclose([norm.mean[0], norm.std[0]], [fg.mean(), fg.std()], rtol=1e-5)
  new = rng.normal(0, 1000, size=(3, 5, 5, 1)).astype(np.float32)   # a case outside the training set
  want = (np.clip(new.astype(np.float64), lo, hi) - fg.mean()) / fg.std()
  np.testing.assert_allclose(norm.apply(new), want, rtol=1e-4, atol=1e-4)
  again = normalize.Normalization.from_dict(norm.to_dict())
  assert again == norm
  np.testing.assert_array_equal(again.apply(new), norm.apply(new))
  with pytest.raises(ConfigError, match="fitted"):
    normalize.Normalization("ct")


def _folder(root, layouts, vols):
  for i, v in enumerate(vols):
    layouts.image(root / "images" / f"c{i}.nii.gz", v, spacing=(0.5, 0.7, 2.0))
    layouts.image(root / "labels" / f"c{i}.nii.gz", (v > 310).astype(np.uint8), spacing=(0.5, 0.7, 2.0))
  return root


def test_folder_default_is_zscore_foreground_per_case_and_records_volumes(tmp_path, layouts):
  rng = np.random.default_rng(3)
  vols = [_volume(rng, (3, 6, 5))[..., 0], _volume(rng, (2, 4, 7))[..., 0] * 3]
  root = _folder(tmp_path / "f", layouts, vols)
  ds, _ = data.load(f"folder:{root}")
  assert ds.normalization.scheme == "zscore-foreground"
  for v, vol in zip(ds.volumes, vols):
    fg = vol[vol != 0].astype(np.float64)
    got = ds.images[v.start:v.stop, :v.shape[0], :v.shape[1], 0]
    np.testing.assert_allclose(got, (vol - fg.mean()) / fg.std(), rtol=1e-5, atol=1e-5)
  assert [(v.name, v.start, v.stop, v.shape, v.ndim) for v in ds.volumes] == [
      ("c0", 0, 3, (6, 5), 3), ("c1", 3, 5, (4, 7), 3)]
  for v in ds.volumes:  # array order (z, y, x) of SimpleITK's (x, y, z) spacing
    np.testing.assert_allclose(v.spacing, (2.0, 0.7, 0.5), rtol=1e-6)
  # a case scaled by 3 lands at the same values: the scheme ignores the scanner's scale
  np.testing.assert_allclose(data.image_to_slices(vols[1] * 3)[..., 0],
                             ds.images[3:5, :4, :7, 0], rtol=1e-5, atol=1e-5)


def test_train_val_fits_ct_on_train_cases_only(tmp_path, layouts):
  rng = np.random.default_rng(4)
  vols = [_volume(rng, (2, 6, 5))[..., 0] * (i + 1) for i in range(4)]
  root = _folder(tmp_path / "f", layouts, vols)
  train, val = data.train_val(f"folder:{root}", val_fraction=0.25, seed=0, normalize="ct")
  train_names = [v.name for v in train.volumes]
  assert len(train_names) == 3 and len(val.volumes) == 1
  fg = np.concatenate([vols[int(n[1:])][vols[int(n[1:])] > 310] for n in train_names]).astype(np.float64)
  assert train.normalization is val.normalization
  np.testing.assert_allclose(train.normalization.mean[0], fg.mean(), rtol=1e-5)
  np.testing.assert_allclose(train.normalization.clip_high[0], np.percentile(fg, 99.5), rtol=1e-5)
  # a fitted normalization is reused as it is (what evaluate does with the stored one)
  _, again = data.train_val(f"folder:{root}", val_fraction=0.25, seed=0, normalize=train.normalization)
  np.testing.assert_array_equal(again.images, val.images)


def test_subset_keeps_whole_volumes():
  ds, _ = data.load("synthetic:5,1,32")
  sub = ds.subset(np.array([True, False, True, True, False]))
  assert [(v.name, v.start, v.stop) for v in sub.volumes] == [
      ("synthetic-train-0000", 0, 1), ("synthetic-train-0002", 1, 2), ("synthetic-train-0003", 2, 3)]
