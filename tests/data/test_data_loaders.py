"""Loaders on tiny files in the real layouts, written with SimpleITK."""

import numpy as np
import pytest
import SimpleITK as sitk

from jaxseg import data
from jaxseg.data import sunnybrook
from jaxseg.errors import DataError


# --- polygon fill -----------------------------------------------------------

def test_fill_square_matches_hand_mask():
  square = np.array([[1.5, 2.5], [5.5, 2.5], [5.5, 6.5], [1.5, 6.5]])  # x from 1.5 to 5.5, y 2.5..6.5
  expected = np.zeros((9, 8), np.uint8)
  expected[3:7, 2:6] = 1  # rows 3..6, cols 2..5: the pixel centres inside
  np.testing.assert_array_equal(sunnybrook.fill_polygon(square, (9, 8)), expected)
  np.testing.assert_array_equal(sunnybrook.fill_polygon(square[::-1], (9, 8)), expected)


def test_fill_triangle_matches_hand_mask():
  tri = np.array([[0.5, 0.5], [8.7, 0.5], [0.5, 8.7]])
  r, c = np.mgrid[0:10, 0:11]
  expected = ((r >= 1) & (c >= 1) & (r + c <= 9)).astype(np.uint8)  # x + y < 9.2
  np.testing.assert_array_equal(sunnybrook.fill_polygon(tri, (10, 11)), expected)


def test_fill_concave_polygon_and_clipping():
  # An L shape; the notch at the top right stays empty. Part lies outside the image.
  ell = np.array([[-2.5, 0.5], [3.5, 0.5], [3.5, 3.5], [6.5, 3.5], [6.5, 6.5], [-2.5, 6.5]])
  expected = np.zeros((8, 8), np.uint8)
  expected[1:4, 0:4] = 1
  expected[4:7, 0:7] = 1
  np.testing.assert_array_equal(sunnybrook.fill_polygon(ell, (8, 8)), expected)


# --- Sunnybrook -------------------------------------------------------------

def test_sunnybrook_layout(tmp_path, layouts):
  rng = np.random.default_rng(0)
  imgs = {k: rng.integers(0, 1500, size=(12, 10)).astype(np.int16) for k in range(4)}
  sq = [[1.5, 2.5], [5.5, 2.5], [5.5, 6.5], [1.5, 6.5]]
  tri = [[0.5, 0.5], [8.7, 0.5], [0.5, 8.7]]
  root = layouts.sunnybrook(tmp_path / "sb", {
      "SC-HF-I-1": ("0004", {48: (imgs[0], sq), 68: (imgs[1], tri)}),
      "SC-N-2": ("0898", {20: (imgs[2], tri)}),
  })
  # A decoy from another (non-SAX) series of SC-HF-I-1 with the same image number.
  layouts.dicom(root / "challenge_training" / "SC-HF-I-1" / "IM-0005-0048.dcm", imgs[3], 48)
  ds, none = data.load(f"sunnybrook:{root}")
  assert none is None and ds.normalization.scheme == "div1024"
  assert ds.images.shape == (3, 12, 10, 1) and ds.labels.shape == (3, 12, 10)
  np.testing.assert_allclose(ds.images[..., 0], np.stack([imgs[0], imgs[1], imgs[2]]) / 1024.0,
                             rtol=1e-6, atol=0)
  sq_mask = np.zeros((12, 10), np.int32)
  sq_mask[3:7, 2:6] = 1
  r, c = np.mgrid[0:12, 0:10]
  tri_mask = ((r >= 1) & (c >= 1) & (r + c <= 9)).astype(np.int32)
  np.testing.assert_array_equal(ds.labels, np.stack([sq_mask, tri_mask, tri_mask]))
  assert ds.cases.tolist() == ["SC-HF-I-1", "SC-HF-I-1", "SC-N-2"]


def test_sunnybrook_case_outside_the_mapping_uses_its_only_series(tmp_path, layouts):
  img = np.arange(80, dtype=np.int16).reshape(8, 10)
  root = layouts.sunnybrook(tmp_path / "sb", {"SC-X-9": ("0777", {5: (img, [[1, 1], [6, 1], [6, 5]])})})
  ds, _ = data.load(f"sunnybrook:{root}")
  np.testing.assert_allclose(ds.images[0, ..., 0], img / 1024.0, rtol=1e-6)
  layouts.dicom(root / "challenge_training" / "SC-X-9" / "IM-0778-0005.dcm", img, 5)
  with pytest.raises(DataError, match="SC-X-9 is not in the SAX series mapping"):
    data.load(f"sunnybrook:{root}")


def test_shrink_case():
  assert sunnybrook.shrink_case("SC-HF-I-01") == "SC-HF-I-1"
  assert sunnybrook.shrink_case("SC-N-40") == "SC-N-40"


# --- ACDC -------------------------------------------------------------------

def _acdc(tmp_path, layouts, zscore):
  rng = np.random.default_rng(1)
  root = tmp_path / "acdc" / "training"
  vols, gts = {}, {}
  for p in (1, 2):
    for f in (1, 12):
      vol = rng.normal(100, 20, size=(3, 9, 11)).astype(np.float32)
      gt = rng.integers(0, 4, size=(3, 9, 11)).astype(np.uint8)
      stem = root / f"patient{p:03d}" / f"patient{p:03d}_frame{f:02d}"
      layouts.image(f"{stem}.nii.gz", vol, spacing=(1.5, 1.5, 10.0))
      layouts.image(f"{stem}_gt.nii.gz", gt, spacing=(1.5, 1.5, 10.0))
      vols[p, f], gts[p, f] = vol, gt
  # The 4-D cine file of the real layout must be ignored.
  layouts.image(root / "patient001" / "patient001_4d.nii.gz", np.zeros((2, 3, 9, 11), np.float32))
  keys = [(1, 1), (1, 12), (2, 1), (2, 12)]
  images = np.concatenate([zscore(vols[k]) for k in keys])
  gt = np.concatenate([gts[k] for k in keys]).astype(np.int32)
  return root.parent, images, gt


def test_acdc_binary_lv_by_default(tmp_path, layouts, zscore_ref):
  root, images, gt = _acdc(tmp_path, layouts, zscore_ref)
  ds, _ = data.load(f"acdc:{root}", normalize="zscore-slice")
  np.testing.assert_allclose(ds.images[..., 0], images, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(ds.labels, (gt == 3).astype(np.int32))
  assert ds.cases.tolist() == ["patient001"] * 6 + ["patient002"] * 6


def test_acdc_class_choice(tmp_path, layouts, zscore_ref):
  root, _, gt = _acdc(tmp_path, layouts, zscore_ref)
  ds, _ = data.load(f"acdc:{root}?classes=all", num_classes=4)
  np.testing.assert_array_equal(ds.labels, gt)
  ds, _ = data.load(f"acdc:{root}?classes=lv,rv", num_classes=3)
  np.testing.assert_array_equal(ds.labels, np.select([gt == 3, gt == 1], [1, 2], 0))
  with pytest.raises(DataError, match="num_classes >= 4"):
    data.load(f"acdc:{root}?classes=all", num_classes=2)
  with pytest.raises(DataError, match="acdc classes"):
    data.load(f"acdc:{root}?classes=lv,aorta")


# --- atria (2018 challenge) -------------------------------------------------

def test_atria_layout_maps_255_masks(tmp_path, layouts, zscore_ref):
  rng = np.random.default_rng(2)
  root = tmp_path / "atria" / "Training Set"
  vols, masks = [], []
  for case in ("0RZDK210BSMWAA6467LU", "1D7CUD1955YZPGK8XHJX"):
    vol = rng.integers(0, 255, size=(4, 10, 8)).astype(np.uint8)
    mask = (rng.random((4, 10, 8)) < 0.2).astype(np.uint8) * 255
    layouts.image(root / case / "lgemri.nrrd", vol, gz=True)
    layouts.image(root / case / "laendo.nrrd", mask, gz=True)
    vols.append(vol)
    masks.append(mask)
  ds, _ = data.load(f"atria:{root.parent}", normalize="zscore-slice")
  np.testing.assert_allclose(ds.images[..., 0], zscore_ref(np.concatenate(vols)), atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(ds.labels, np.concatenate(masks) // 255)
  assert ds.cases.tolist()[::4] == ["Training Set/0RZDK210BSMWAA6467LU", "Training Set/1D7CUD1955YZPGK8XHJX"]


# --- folder -----------------------------------------------------------------

def test_folder_mixed_formats_2d_and_3d(tmp_path, layouts, zscore_ref):
  rng = np.random.default_rng(3)
  root = tmp_path / "f"
  a = rng.integers(0, 256, size=(6, 7)).astype(np.uint8)              # 2-D PNG
  a_lab = (rng.random((6, 7)) < 0.5).astype(np.uint8) * 255            # 0/255 PNG mask
  b = rng.normal(size=(2, 8, 5)).astype(np.float32)                    # 3-D MHA volume
  b_lab = rng.integers(0, 2, size=(2, 8, 5)).astype(np.int16)
  layouts.image(root / "images" / "a.png", a)
  layouts.image(root / "labels" / "a.png", a_lab)
  layouts.image(root / "images" / "b.mha", b)
  layouts.image(root / "labels" / "b.nrrd", b_lab)
  ds, _ = data.load(f"folder:{root}", normalize="zscore-slice")
  assert ds.images.shape == (3, 8, 7, 1)  # padded to the largest H and W
  np.testing.assert_allclose(ds.images[0, :6, :7, 0], zscore_ref(a), atol=1e-5)
  np.testing.assert_allclose(ds.images[1:, :8, :5, 0], zscore_ref(b), atol=1e-5)
  assert np.all(ds.images[0, 6:] == 0) and np.all(ds.images[1:, :, 5:] == 0)
  np.testing.assert_array_equal(ds.labels[0, :6, :7], a_lab // 255)
  np.testing.assert_array_equal(ds.labels[1:, :8, :5], b_lab)
  assert ds.labels[0, 6:].sum() == 0
  assert ds.cases.tolist() == ["a", "b", "b"]


def test_folder_rgb_images_keep_channels(tmp_path, layouts, zscore_ref):
  rng = np.random.default_rng(4)
  rgb = rng.integers(0, 256, size=(5, 6, 3)).astype(np.uint8)
  lab = rng.integers(0, 2, size=(5, 6)).astype(np.uint8)
  layouts.image(tmp_path / "images" / "x.png", rgb, vector=True)
  layouts.image(tmp_path / "labels" / "x.png", lab)
  ds, _ = data.load(f"folder:{tmp_path}", normalize="zscore-slice")
  assert ds.images.shape == (1, 5, 6, 3)
  np.testing.assert_allclose(ds.images[0], np.moveaxis(zscore_ref(np.moveaxis(rgb, -1, 0)), 0, -1),
                             atol=1e-5)


# --- geometry and split -----------------------------------------------------

@pytest.mark.parametrize("name", ["vol.nrrd", "vol.nii.gz", "vol.mha"])
def test_geometry_roundtrip(tmp_path, layouts, name):
  rng = np.random.default_rng(5)
  vol = rng.normal(size=(4, 6, 5)).astype(np.float32)
  direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
  src = layouts.image(tmp_path / name, vol, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 5.0, 3.25),
                      direction=direction)
  array, geom = data.read_image(src)
  np.testing.assert_array_equal(array, vol)
  assert geom.size == (5, 6, 4)
  np.testing.assert_allclose(geom.spacing, (0.7, 0.8, 2.5), rtol=1e-6)
  np.testing.assert_allclose(geom.origin, (-10.0, 5.0, 3.25), rtol=1e-6)
  np.testing.assert_allclose(geom.direction, direction, atol=1e-6)
  labels = (array > 0).astype(np.uint8)
  out = tmp_path / ("out_" + name)
  data.write_image(out, labels, geom)
  back = sitk.ReadImage(str(out))
  np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
  assert back.GetSize() == geom.size
  np.testing.assert_allclose(back.GetSpacing(), geom.spacing, rtol=1e-6)
  np.testing.assert_allclose(back.GetOrigin(), geom.origin, rtol=1e-6)
  np.testing.assert_allclose(back.GetDirection(), geom.direction, atol=1e-6)


def test_image_to_slices_matches_loader(tmp_path, layouts, zscore_ref):
  vol = np.random.default_rng(6).normal(size=(3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(data.image_to_slices(vol, normalization="zscore-slice")[..., 0],
                             zscore_ref(vol), atol=1e-5)
  np.testing.assert_allclose(data.image_to_slices(vol[0], normalization="div1024")[0, ..., 0],
                             vol[0] / 1024, rtol=1e-6)


def _cases_folder(root, layouts, n=10):
  rng = np.random.default_rng(7)
  for i in range(n):
    layouts.image(root / "images" / f"case{i}.nrrd", rng.normal(size=(3, 4, 4)).astype(np.float32))
    layouts.image(root / "labels" / f"case{i}.nrrd", rng.integers(0, 2, (3, 4, 4)).astype(np.uint8))
  return root


def test_train_val_holds_out_whole_cases(tmp_path, layouts):
  root = _cases_folder(tmp_path / "f", layouts)
  train, val = data.train_val(f"folder:{root}", val_fraction=0.2, seed=3)
  assert len(set(val.cases)) == 2 and len(set(train.cases)) == 8
  assert not set(train.cases) & set(val.cases)
  assert len(train) == 24 and len(val) == 6
  again = data.train_val(f"folder:{root}", val_fraction=0.2, seed=3)[1]
  assert again.cases.tolist() == val.cases.tolist()
  others = {tuple(sorted(set(data.train_val(f"folder:{root}", val_fraction=0.2, seed=s)[1].cases)))
            for s in range(6)}
  assert len(others) > 1
  full, _ = data.load(f"folder:{root}")
  for ds in (train, val):
    for i, case in enumerate(ds.cases):
      j = np.nonzero(full.cases == case)[0]
      assert any(np.array_equal(ds.images[i], full.images[k]) for k in j)


def test_train_val_with_explicit_val_spec(tmp_path, layouts):
  root = _cases_folder(tmp_path / "f", layouts, n=3)
  train, val = data.train_val("synthetic:3,2,32", f"folder:{root}")
  assert len(train) == 3 and len(val) == 9 and val.name == f"folder:{root}"
  train, val = data.train_val(f"folder:{root}", "synthetic:1,2,32")
  assert len(train) == 9 and len(val) == 2


def test_single_dicom_frame_prediction_written_as_png(tmp_path, layouts):
  dcm = layouts.dicom(tmp_path / "IM-0001-0001.dcm", np.arange(30, dtype=np.int16).reshape(5, 6), 1)
  array, geom = data.read_image(dcm)
  assert array.shape == (1, 5, 6) and len(geom.size) == 3
  labels = (array > 10).astype(np.uint8)
  data.write_image(tmp_path / "pred.png", labels, geom)
  back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred.png")))
  np.testing.assert_array_equal(back, labels[0])


def test_dataset_padded_to_multiple():
  ds, _ = data.load("synthetic:2,1,40")
  padded = ds.padded_to(16)
  assert padded.images.shape == (2, 48, 48, 1) and padded.labels.shape == (2, 48, 48)
  np.testing.assert_array_equal(padded.images[:, :40, :40], ds.images)
  assert padded.labels.sum() == ds.labels.sum() and padded.normalization.scheme == "div1024"
