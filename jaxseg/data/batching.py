"""Batches, augmentation, and padding to the sizes a model can take.

The order of every epoch and its augmentations depend only on (seed, epoch),
so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from jaxseg.errors import ConfigError

MAX_ROTATION_DEGREES = 15.0


def num_batches(ds, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Batches per epoch."""
  _check_batch_size(batch_size)
  n = len(ds.labels)
  return n // batch_size if drop_remainder else math.ceil(n / batch_size)


def _check_batch_size(batch_size) -> None:
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """Permutation of range(n) for this epoch, a function of (seed, epoch) only."""
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([int(seed) % 2**63, int(epoch), 0]).permutation(n)


def batches(ds, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
            augment: bool = False, drop_remainder: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (images (B,H,W,C) float32, labels (B,H,W) int32) NumPy batches.

  Args:
    ds: a Dataset.
    batch_size: images per batch.
    seed, epoch: the only inputs to the shuffle order and the augmentation.
    shuffle: permute the images each epoch.
    augment: random flips and rotations up to +-15 degrees, see :func:`augment_batch`.
    drop_remainder: skip the last, smaller batch.

  Raises:
    ConfigError: for a batch size < 1, or if with drop_remainder not a single
      batch fits the data set.
  """
  steps = num_batches(ds, batch_size, drop_remainder=drop_remainder)
  n = len(ds.labels)
  if steps == 0 and n > 0:
    raise ConfigError(f"batch size {batch_size} is larger than the {n} images of {ds.name}")
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
  for b in range(steps):
    idx = order[b * batch_size:(b + 1) * batch_size]
    images, labels = ds.images[idx], ds.labels[idx]
    if augment:
      rng = np.random.default_rng([int(seed) % 2**63, int(epoch), 1, b])
      images, labels = augment_batch(images, labels, rng)
    yield images, labels


def augment_batch(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *,
                  max_degrees: float = MAX_ROTATION_DEGREES):
  """Random flips and a small rotation per image, the same for image and label.

  Rotation samples nearest neighbours about the image centre, so labels stay
  integers and an image equal to its label stays equal to it; pixels rotated
  in from outside get the image's minimum and label 0.
  """
  n, h, w = labels.shape
  flip_v, flip_h = rng.random(n) < 0.5, rng.random(n) < 0.5
  angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  out_images = np.empty_like(images)
  out_labels = np.empty_like(labels)
  for i in range(n):
    c, s = np.cos(angles[i]), np.sin(angles[i])
    # Inverse mapping: each output pixel reads the source pixel it came from.
    sy = np.rint(cy + c * (yy - cy) - s * (xx - cx)).astype(np.int64)
    sx = np.rint(cx + s * (yy - cy) + c * (xx - cx)).astype(np.int64)
    if flip_v[i]:
      sy = h - 1 - sy
    if flip_h[i]:
      sx = w - 1 - sx
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    syc, sxc = np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)
    fill = images[i].min(axis=(0, 1))
    out_images[i] = np.where(inside[..., None], images[i][syc, sxc], fill)
    out_labels[i] = np.where(inside, labels[i][syc, sxc], 0)
  return out_images, out_labels


def pad_to_multiple(images: np.ndarray, multiple: int):
  """Zero-pads the spatial axes at the end up to a multiple of `multiple`.

  Spatial axes are 1..ndim-2 for (N, H, W, C) or (N, D, H, W, C) arrays and
  1..2 for (N, H, W) labels. Returns (padded, original spatial shape).
  """
  images = np.asarray(images)
  if not isinstance(multiple, (int, np.integer)) or multiple < 1:
    raise ConfigError(f"pad multiple must be a positive integer, got {multiple!r}")
  axes = _spatial_axes(images)
  original = tuple(images.shape[a] for a in axes)
  pad = [(0, 0)] * images.ndim
  for a, size in zip(axes, original):
    pad[a] = (0, -size % multiple)
  return np.pad(images, pad), original


def crop_to(arr: np.ndarray, original_hw) -> np.ndarray:
  """Undoes pad_to_multiple: keeps the first `original_hw` of the spatial axes."""
  axes = _spatial_axes(arr)
  index = [slice(None)] * np.ndim(arr)
  for a, size in zip(axes, original_hw):
    index[a] = slice(0, size)
  return arr[tuple(index)]


def _spatial_axes(arr) -> tuple[int, ...]:
  nd = np.ndim(arr)
  if nd == 3:
    return (1, 2)
  if nd >= 4:
    return tuple(range(1, nd - 1))
  raise ConfigError(f"expected a batch of images (N, H, W[, C]), got shape {np.shape(arr)}")
