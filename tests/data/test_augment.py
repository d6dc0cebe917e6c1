"""Augmentation moves image and label together, 2-D and 3-D; the Grain pipeline is exact and resumable."""

import dataclasses

import numpy as np
import pytest

from jaxseg import data
from jaxseg.data import augment, pipeline
from jaxseg.errors import ConfigError

SPATIAL = dataclasses.replace(augment.PRESETS["heavy"], p_rotate=1.0, p_scale=1.0, p_elastic=1.0, p_mirror=0.5,
                              p_brightness=0, p_contrast=0, p_gamma=0, p_noise=0, p_blur=0)


def _blobs(shape, seed=0):
  rng = np.random.default_rng(seed)
  grid = np.indices(shape).astype(np.float64)
  label = np.zeros(shape, np.int32)
  for c in (1, 2):
    centre = [rng.uniform(0.3, 0.7) * s for s in shape]
    r = sum((g - m) ** 2 for g, m in zip(grid, centre))
    label[r < (min(shape) / 5) ** 2] = c
  return label


@pytest.mark.parametrize("shape", [(40, 36), (6, 24, 28)])
def test_image_and_label_move_together(shape):
  label = _blobs(shape)
  image = (label == 1).astype(np.float32)[..., None] * 100
  for seed in range(4):
    out_img, out_lab = augment.augment_example(image, label, np.random.default_rng(seed), SPATIAL)
    assert out_img.shape == image.shape and out_lab.shape == label.shape and out_lab.dtype == np.int32
    assert set(np.unique(out_lab)) <= {0, 1, 2}
    # linear interpolation of the image gives the nearest neighbour (the label's
    # sample) a weight of at least 1/2**ndim
    w = 100 / 2 ** len(shape)
    assert np.all(out_img[..., 0][out_lab == 1] >= w - 1e-3)
    assert np.all(out_img[..., 0][out_lab != 1] <= 100 - w + 1e-3)
    assert not np.array_equal(out_lab, label)


def test_mirroring_alone_flips_both_exactly():
  label = _blobs((10, 12), seed=1)
  image = np.random.default_rng(0).normal(size=(10, 12, 2)).astype(np.float32)
  cfg = augment.Augment(p_mirror=1.0)
  out_img, out_lab = augment.augment_example(image, label, np.random.default_rng(0), cfg)
  np.testing.assert_array_equal(out_img, image[::-1, ::-1])
  np.testing.assert_array_equal(out_lab, label[::-1, ::-1])


def test_3d_rotation_stays_in_plane():
  label = np.zeros((4, 20, 20), np.int32)
  for z in range(4):
    label[z, 5:15, 5:15] = z % 3            # each slice its own class
  cfg = augment.Augment(p_rotate=1.0, max_degrees=40.0)
  _, out = augment.augment_example(label[..., None].astype(np.float32), label, np.random.default_rng(3), cfg)
  for z in range(4):
    assert set(np.unique(out[z])) <= {0, z % 3}
    assert (out[z] == z % 3).sum() > 50


def test_intensity_changes_only_the_image_and_is_seeded():
  label = _blobs((16, 16))
  image = np.random.default_rng(1).uniform(0, 2, size=(16, 16, 1)).astype(np.float32)
  cfg = augment.Augment(p_brightness=1.0, brightness=(1.3, 1.3))
  out_img, out_lab = augment.augment_example(image, label, np.random.default_rng(0), cfg)
  np.testing.assert_allclose(out_img, image * np.float32(1.3), rtol=1e-6)
  np.testing.assert_array_equal(out_lab, label)
  cfg = augment.Augment(p_gamma=1.0, gamma=(2.0, 2.0))
  out_img, _ = augment.augment_example(image, label, np.random.default_rng(0), cfg)
  lo, hi = image.min(), image.max()
  np.testing.assert_allclose(out_img, ((image - lo) / (hi - lo)) ** 2 * (hi - lo) + lo, rtol=1e-5, atol=1e-6)
  heavy = augment.PRESETS["heavy"]
  a = augment.augment_example(image, label, np.random.default_rng(7), heavy)
  b = augment.augment_example(image, label, np.random.default_rng(7), heavy)
  c = augment.augment_example(image, label, np.random.default_rng(8), heavy)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  with pytest.raises(ConfigError, match="--augment: unknown preset 'wild'"):
    augment.preset("wild")


def _tiny():
  ds, _ = data.load("synthetic:12,1,32")
  return ds


def test_pipeline_without_augmentation_is_the_old_epoch_order():
  ds = _tiny()
  old = [b for e in (1, 2) for b in data.batches(ds, 4, seed=5, epoch=e)]
  batches = pipeline.training_batches(ds.images, ds.labels, batch_size=4, steps_per_epoch=3, epochs=2, seed=5)
  with pipeline.BatchIterator(batches) as it:
    new = list(it.take(6))
  for (oi, ol), (ni, nl) in zip(old, new):
    np.testing.assert_array_equal(oi, ni)
    np.testing.assert_array_equal(ol, nl)


def test_pipeline_is_the_same_with_workers_and_from_a_checkpointed_position():
  ds = _tiny()
  batches = pipeline.training_batches(ds.images, ds.labels, batch_size=4, steps_per_epoch=3, epochs=3, seed=2,
                                      augment="heavy")
  with pipeline.BatchIterator(batches) as it:
    ref = list(it.take(9))
    assert it.next_index == 9
  with pipeline.BatchIterator(batches, start_batch=4, options=pipeline.PipelineOptions(workers=2)) as it:
    later = list(it.take(5))
  for (ri, rl), (li, ll) in zip(ref[4:], later):
    np.testing.assert_array_equal(ri, li)
    np.testing.assert_array_equal(rl, ll)
  # each example's augmentation depends on (seed, epoch, example): epochs differ
  assert not np.array_equal(ref[0][0], ref[3][0])
  # Grain's own iterator state of the same chain round-trips too
  it = iter(batches.to_iter_dataset())
  [next(it) for _ in range(2)]
  state = it.get_state()
  again = iter(batches.to_iter_dataset())
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["image"], ref[2][0])
