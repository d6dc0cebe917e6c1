"""The 3-D cardiac phantom: shapes, spacing, determinism, class balance, an LV that varies."""

import numpy as np
import pytest

from jaxseg.data import synthetic3d
from jaxseg.errors import DataError


def test_shapes_dtypes_and_anisotropic_spacing():
  images, labels, spacing = synthetic3d.generate(2, size=32, depth=8, seed=1)
  assert images.shape == (2, 8, 32, 32) and images.dtype == np.float32
  assert labels.shape == (2, 8, 32, 32) and labels.dtype == np.int32
  assert spacing == (8.0, 10.0, 10.0)                       # 320 mm / 32 in-plane, 8 mm slices
  assert synthetic3d.generate(1, size=256, depth=2)[2] == (8.0, 1.25, 1.25)
  z, y, x = synthetic3d.generate(1, size=64, slice_mm=10.0)[2]
  assert z == 10.0 and y == x == 5.0 and z / y >= 2          # thick slices
  assert synthetic3d.DEPTH == 16


def test_same_seed_same_bytes_and_volume_i_independent_of_count():
  a_img, a_lab, _ = synthetic3d.generate(2, size=32, seed=5)
  b_img, b_lab, _ = synthetic3d.generate(3, size=32, seed=5)
  assert a_img.tobytes() == b_img[:2].tobytes() and a_lab.tobytes() == b_lab[:2].tobytes()
  assert not np.array_equal(a_img, synthetic3d.generate(2, size=32, seed=6)[0])
  assert not np.array_equal(a_img, synthetic3d.generate(2, size=32, seed=5, split="val")[0])


@pytest.fixture(scope="module")
def default12():
  """12 training volumes at the spec's default size (64 in-plane, 16 slices)."""
  return synthetic3d.generate(12, size=64, seed=0)


def test_label_fraction_and_intensities(default12):
  images, labels, _ = default12
  assert set(np.unique(labels)) == {0, 1}
  per_volume = labels.mean(axis=(1, 2, 3))
  assert 0.002 <= per_volume.min() and per_volume.max() <= 0.02, per_volume
  assert 0.004 <= per_volume.mean() <= 0.01, per_volume.mean()
  assert images.min() >= 0 and 500 < np.percentile(images, 99.9) < 1600   # raw MRI-like values


def test_the_lv_is_a_tapering_shape_that_differs_between_cases(default12):
  _, labels, spacing = default12
  slices, volumes, centres, base_over_apex = [], [], [], []
  for lab in labels:
    area = lab.sum(axis=(1, 2))
    ks = np.flatnonzero(area)
    assert np.all(np.diff(ks) == 1), "one connected run of slices"
    assert 6 <= len(ks) <= 13, len(ks)                       # 60-90 mm at 8 mm, plus partial ends
    slices.append(len(ks))
    volumes.append(lab.sum() * np.prod(spacing))
    centres.append(np.argwhere(lab).mean(axis=0))
    # the base (first slice) is wide, the apex (last) small: a truncated ellipsoid or cone
    base_over_apex.append(area[ks[:2]].max() / area[ks[-1]])
    assert area[ks[:2]].max() == area.max() or area.max() <= 1.2 * area[ks[:2]].max()
  assert min(base_over_apex) >= 2, base_over_apex
  assert len(set(slices)) >= 3                               # lengths vary
  assert np.std(volumes) / np.mean(volumes) >= 0.15          # sizes vary
  centres = np.array(centres)
  assert centres[:, 1].std() >= 2 and centres[:, 2].std() >= 2   # pixels at 5 mm: ~1 cm
  assert centres[:, 0].std() >= 0.4                              # base plane moves in z


@pytest.mark.parametrize("index", range(4))
def test_left_atrium_and_rv_are_bright_but_unlabelled(index):
  image, label, regions = synthetic3d.phantom(synthetic3d._rng(0, "train", index), 128)
  lv, la, rv, myo = regions["lv"], regions["la"], regions["rv"], regions["myo"]
  np.testing.assert_array_equal(label, lv.astype(np.int32))
  assert la.sum() >= 50 and rv.sum() >= 200
  assert label[la].max() == 0 and label[rv].max() == 0
  # the atrium lies above the base: no slice holds it below the LV's first slice
  first_lv = np.flatnonzero(lv.any(axis=(1, 2)))[0]
  assert np.flatnonzero(la.any(axis=(1, 2))).max() <= first_lv
  assert image[la].mean() > 1.5 * image[myo].mean() and image[lv].mean() > 1.5 * image[myo].mean()


def test_spec_parsing():
  assert synthetic3d.parse_spec("synthetic3d") == synthetic3d.SPEC_DEFAULT
  assert synthetic3d.parse_spec("synthetic3d:4,2") == (4, 2, synthetic3d.SPEC_DEFAULT[2])
  assert synthetic3d.parse_spec("synthetic3d: 4, 2, 32") == (4, 2, 32)
  for bad in ("synthetic3d:4", "synthetic3d:a,b", "synthetic3d:0,2", "synthetic3d:4,2,8",
              "synthetic3d:1,2,3,4", "synthetic:4,2", "synthetic3d:100000,1,1024"):
    with pytest.raises(DataError) as e:
      synthetic3d.parse_spec(bad)
    assert bad in str(e.value) and "\n" not in str(e.value)
