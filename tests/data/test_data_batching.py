"""Batches: order from (seed, epoch) only, full coverage, aligned augmentation, padding."""

import numpy as np
import pytest

from jaxseg import data
from jaxseg.errors import ConfigError


def _indexed(n=10, h=8, w=6):
  """Image i is filled with i, so a batch tells which images it holds."""
  images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, h, w, 1)).copy()
  labels = np.zeros((n, h, w), np.int32)
  return data.Dataset(images, labels, np.asarray([f"c{i}" for i in range(n)]), "indexed")


def _order(ds, bs, **kw):
  return [b[0][:, 0, 0, 0].astype(int).tolist() for b in data.batches(ds, bs, **kw)]


def test_order_depends_only_on_seed_and_epoch():
  ds = _indexed()
  first = _order(ds, 3, seed=7, epoch=2)
  _order(ds, 3, seed=7, epoch=0)  # other calls in between change nothing
  assert _order(ds, 3, seed=7, epoch=2) == first
  assert _order(ds, 3, seed=7, epoch=3) != first
  assert _order(ds, 3, seed=8, epoch=2) != first
  # The same permutation as the public epoch_order, cut into batches.
  perm = data.epoch_order(10, seed=7, epoch=2).tolist()
  assert first == [perm[0:3], perm[3:6], perm[6:9]]


def test_every_index_once_per_epoch():
  ds = _indexed(10)
  for epoch in range(3):
    full = sum(_order(ds, 5, seed=1, epoch=epoch), [])
    assert sorted(full) == list(range(10))
    kept = sum(_order(ds, 3, seed=1, epoch=epoch), [])
    assert len(kept) == 9 and len(set(kept)) == 9
    tail = _order(ds, 3, seed=1, epoch=epoch, drop_remainder=False)
    assert [len(b) for b in tail] == [3, 3, 3, 1] and sorted(sum(tail, [])) == list(range(10))
  assert _order(ds, 4, seed=1, epoch=0, shuffle=False) == [[0, 1, 2, 3], [4, 5, 6, 7]]
  assert data.num_batches(ds, 3) == 3 and data.num_batches(ds, 3, drop_remainder=False) == 4


def test_bad_batch_sizes():
  ds = _indexed(4)
  with pytest.raises(ConfigError, match="batch size"):
    list(data.batches(ds, 0, seed=0, epoch=0))
  with pytest.raises(ConfigError, match="larger than the 4 images"):
    list(data.batches(ds, 5, seed=0, epoch=0))


def test_augmentation_keeps_image_and_label_aligned():
  rng = np.random.default_rng(0)
  labels = np.zeros((12, 20, 16), np.int32)
  for i in range(12):
    y, x = rng.integers(2, 12), rng.integers(2, 9)
    labels[i, y:y + 6, x:x + 5] = 1
    labels[i, y, x] = 2  # an asymmetric mark, so flips are visible
  ds = data.Dataset(labels[..., None].astype(np.float32), labels, np.asarray(["c"] * 12), "x")
  changed = 0
  for epoch in range(2):
    batches = list(data.batches(ds, 4, seed=3, epoch=epoch, augment=True))
    again = list(data.batches(ds, 4, seed=3, epoch=epoch, augment=True))
    for (img, lab), (img2, lab2) in zip(batches, again):
      np.testing.assert_array_equal(img[..., 0], lab.astype(np.float32))
      np.testing.assert_array_equal(img, img2)
      assert lab.dtype == np.int32 and set(np.unique(lab)) <= {0, 1, 2}
    plain = list(data.batches(ds, 4, seed=3, epoch=epoch))
    changed += sum(not np.array_equal(a[1], p[1]) for a, p in zip(batches, plain))
  assert changed >= 4


def test_flip_only_augmentation_is_one_of_the_four_flips():
  rng = np.random.default_rng(1)
  images = rng.normal(size=(8, 5, 7, 2)).astype(np.float32)
  labels = rng.integers(0, 3, size=(8, 5, 7)).astype(np.int32)
  out_img, out_lab = data.augment_batch(images, labels, np.random.default_rng(2), max_degrees=0.0)
  seen = set()
  for i in range(8):
    candidates = {(fv, fh): images[i][::(-1 if fv else 1), ::(-1 if fh else 1)]
                  for fv in (0, 1) for fh in (0, 1)}
    match = [k for k, c in candidates.items() if np.array_equal(c, out_img[i])]
    assert len(match) == 1
    fv, fh = match[0]
    np.testing.assert_array_equal(out_lab[i], labels[i][::(-1 if fv else 1), ::(-1 if fh else 1)])
    seen.add(match[0])
  assert len(seen) >= 2


def test_small_rotation_moves_a_point_as_expected():
  # A single pixel off-centre; after rotation it must be at distance ~r from the centre.
  labels = np.zeros((1, 31, 31), np.int32)
  labels[0, 15, 25] = 1
  images = labels[..., None].astype(np.float32)
  _, out = data.augment_batch(images, labels, np.random.default_rng(5), max_degrees=15.0)
  ys, xs = np.nonzero(out[0])
  assert len(ys) >= 1
  r = np.hypot(ys - 15, xs - 15)
  assert np.all(np.abs(r - 10) <= 1.5)
  # within +-15 degrees of the horizontal axis (either side, flips allowed)
  ang = np.degrees(np.arctan2(np.abs(ys - 15), np.abs(xs - 15)))
  assert np.all(ang <= 15 + 6)


def test_pad_to_multiple_and_crop_back():
  x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3) + 1
  padded, hw = data.pad_to_multiple(x, 4)
  assert padded.shape == (2, 8, 8, 3) and hw == (5, 7)
  np.testing.assert_array_equal(padded[:, :5, :7], x)
  assert np.all(padded[:, 5:] == 0) and np.all(padded[:, :, 7:] == 0)
  np.testing.assert_array_equal(data.crop_to(padded, hw), x)
  labels = np.ones((2, 5, 7), np.int32)
  lp, lhw = data.pad_to_multiple(labels, 16)
  assert lp.shape == (2, 16, 16) and lhw == (5, 7) and lp.sum() == labels.sum()
  vol = np.ones((1, 3, 5, 6, 1), np.float32)
  vp, vhw = data.pad_to_multiple(vol, 4)
  assert vp.shape == (1, 4, 8, 8, 1) and vhw == (3, 5, 6)
  np.testing.assert_array_equal(data.crop_to(vp, vhw), vol)
  same, shw = data.pad_to_multiple(x[:, :4, :4], 4)
  assert same.shape == (2, 4, 4, 3)
