"""Per-case Dice and HD95 against a brute-force NumPy computation on hand-made masks."""

import itertools

import numpy as np
import pytest

from jaxseg import percase


def _surface_ref(mask):
  """Voxels of the mask with a face neighbour outside it (or outside the image), by explicit shifts."""
  m = np.pad(mask.astype(bool), 1)
  inner = np.ones_like(m)
  for axis in range(mask.ndim):
    for step in (1, -1):
      inner &= np.roll(m, step, axis=axis)
  core = tuple(slice(1, -1) for _ in range(mask.ndim))
  return mask.astype(bool) & ~inner[core]


def _hd95_ref(a, b, spacing):
  """Pairwise distances between surface voxel coordinates in mm (no distance transform)."""
  pa = np.argwhere(_surface_ref(a)) * np.asarray(spacing)
  pb = np.argwhere(_surface_ref(b)) * np.asarray(spacing)
  d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
  return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95)), d


def _sphere(shape, centre, radius_mm, spacing):
  grid = np.indices(shape).astype(np.float64)
  r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
  return r2 <= radius_mm ** 2


def test_surface_matches_explicit_neighbours():
  rng = np.random.default_rng(0)
  for shape in ((9, 11), (5, 7, 6)):
    mask = rng.random(shape) < 0.5
    np.testing.assert_array_equal(percase.surface(mask), _surface_ref(mask))


@pytest.mark.parametrize("axis,k", [(0, 2), (1, 3), (2, 1)])
def test_shifted_sphere_in_anisotropic_spacing(axis, k):
  spacing = (2.5, 0.8, 1.1)
  shape = (16, 40, 34)
  centre = (7.0, 19.0, 16.0)
  a = _sphere(shape, centre, 11.0, spacing)
  b = np.roll(a, k, axis=axis)              # shifted by k voxels = k * spacing[axis] mm
  shift = k * spacing[axis]
  assert not (a[[0, -1]].any() or b[[0, -1]].any())  # away from the borders
  ref, pairwise = _hd95_ref(a, b, spacing)
  got = percase.hd95(a, b, spacing)
  np.testing.assert_allclose(got, ref, rtol=1e-12)
  # every surface voxel of A has its shifted twin on B's surface, and A's pole
  # facing away from the shift is exactly `shift` from B: the Hausdorff distance.
  np.testing.assert_allclose(pairwise.min(axis=1).max(), shift, rtol=1e-12)
  d_ab = percase.directed_surface_distances(a, b, spacing)
  np.testing.assert_allclose(d_ab.max(), shift, rtol=1e-12)
  assert 0 < got <= shift + 1e-12
  # the same voxels in isotropic 1 mm spacing give another distance
  assert percase.hd95(a, b, (1.0, 1.0, 1.0)) != pytest.approx(got)


def test_random_masks_match_brute_force_2d_and_3d():
  rng = np.random.default_rng(1)
  for shape, spacing in (((12, 15), (0.7, 1.3)), ((6, 9, 8), (3.0, 1.0, 0.5))):
    for _ in range(3):
      a = rng.random(shape) < 0.3
      b = rng.random(shape) < 0.2
      np.testing.assert_allclose(percase.hd95(a, b, spacing), _hd95_ref(a, b, spacing)[0], rtol=1e-12)
      inter = (a & b).sum()
      assert percase.dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()))


def test_empty_mask_policy():
  empty, full = np.zeros((5, 6), bool), np.zeros((5, 6), bool)
  full[1:3, 2:4] = True
  assert percase.dice(empty, empty) == 1.0 and percase.hd95(empty, empty, (1, 1)) == 0.0
  for a, b in ((empty, full), (full, empty)):
    assert percase.dice(a, b) == 0.0 and percase.hd95(a, b, (1, 1)) is None
  pred = np.zeros((5, 6), int)
  truth = np.zeros((5, 6), int)
  truth[1:3, 2:4] = 2                      # class 1 absent from both, class 2 missed
  scores = percase.case_scores(pred, truth, (1.0, 1.0), num_classes=3)
  assert scores == {"dice": {"1": 1.0, "2": 0.0}, "hd95": {"1": 0.0, "2": None}}
  other = percase.case_scores(truth, truth, (1.0, 1.0), num_classes=3)
  summary = percase.summarize([{"case": "a", **scores}, {"case": "b", **other}])
  assert summary == {"mean_dice": {"1": 1.0, "2": 0.5}, "mean_hd95": {"1": 0.0, "2": 0.0},
                     "hd95_undefined": {"1": 0, "2": 1}}
  table = percase.format_table([{"case": "a", **scores}], percase.summarize([{"case": "a", **scores}]))
  assert table.splitlines()[1].split() == ["a", "1.0000", "0.0000", "0.00", "-"]
