"""Patch sampling for training on cases larger than the model's input (2-D images or volumes).

As nnU-Net does (Isensee et al. 2021, ``oversample_foreground_percent``):
each patch is centred on a foreground voxel with probability
``foreground_share`` (a third by default; a class is drawn uniformly from
the foreground classes the case holds, then one of its voxels), and else
placed uniformly at random. Patches stay inside the case where it is at least
as large as the patch; along an axis where the case is smaller, the patch
holds the whole case at a random offset and the rest is padding (image 0,
the mean after z-scoring; label 0). A foreground voxel a patch is centred on
is always inside the patch.

Everything is drawn from the generator it is given: the training pipeline
seeds it by (seed, epoch, case, patch), so a patch is a function of those.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxseg.data.preprocess import extract_region, foreground_sample
from jaxseg.errors import ConfigError

FOREGROUND_SHARE = 1 / 3


def parse_patch_size(text) -> tuple[int, ...] | None:
  """'16,48,48' -> (16, 48, 48); ConfigError for anything but 2 or 3 positive integers."""
  if text is None:
    return None
  values = text if isinstance(text, (list, tuple)) else str(text).split(",")
  try:
    out = tuple(int(str(v).strip()) for v in values)
  except ValueError:
    raise ConfigError(f"--patch-size: expected D,H,W (or H,W) integers, got {text!r}") from None
  if len(out) not in (2, 3) or min(out) < 1:
    raise ConfigError(f"--patch-size: expected 2 or 3 positive integers (D,H,W or H,W), got {text!r}")
  return out


@dataclasses.dataclass(frozen=True)
class PatchSampler:
  """Where patches of ``size`` come from in a case.

  size: the patch, one int per spatial axis.
  foreground_share: probability that a patch is centred on a foreground voxel.
  """
  size: tuple[int, ...]
  foreground_share: float = FOREGROUND_SHARE

  def __post_init__(self):
    if not 0 <= self.foreground_share <= 1:
      raise ConfigError(f"foreground_share must be in [0, 1], got {self.foreground_share}")

  def start(self, shape: Sequence[int], foreground: np.ndarray, rng: np.random.Generator) -> tuple[int, ...]:
    """The patch's first voxel (may be negative where the case is smaller than the patch).

    Args:
      shape: the case's spatial shape.
      foreground: ``(M, 1 + ndim)`` class and coordinates of foreground voxels
        (:func:`~jaxseg.data.preprocess.foreground_sample`); may be empty.
      rng: the only source of randomness.
    """
    if len(shape) != len(self.size):
      raise ConfigError(f"a {len(self.size)}-D patch {self.size} for a {len(shape)}-D case {tuple(shape)}")
    lo = [min(0, s - p) for s, p in zip(shape, self.size)]
    hi = [max(0, s - p) for s, p in zip(shape, self.size)]
    centred = rng.random() < self.foreground_share
    if centred and len(foreground):
      classes = np.unique(foreground[:, 0])
      c = classes[rng.integers(len(classes))]
      rows = foreground[foreground[:, 0] == c]
      voxel = rows[rng.integers(len(rows)), 1:]
      return tuple(int(np.clip(v - p // 2, a, b)) for v, p, a, b in zip(voxel, self.size, lo, hi))
    return tuple(int(rng.integers(a, b + 1)) for a, b in zip(lo, hi))


class SliceCases:
  """The slices of an in-memory :class:`~jaxseg.data.Dataset` as cases for the patch
  sampler (2-D models): each slice at its own size (its case's, before the
  data set padded it), foreground found on the fly."""

  def __init__(self, ds):
    self.images, self.labels = ds.images, ds.labels
    shapes = [tuple(ds.labels.shape[1:])] * len(ds.labels)
    for v in ds.volumes:
      for i in range(v.start, v.stop):
        shapes[i] = tuple(v.shape)
    self.shapes = shapes

  def __len__(self) -> int:
    return len(self.labels)

  def shape(self, i: int) -> tuple[int, ...]:
    return self.shapes[i]

  def foreground(self, i: int) -> np.ndarray:
    h, w = self.shapes[i]
    return foreground_sample(self.labels[i, :h, :w], i)

  def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = self.shapes[i]
    return self.images[i, :h, :w], self.labels[i, :h, :w]

  def read_region(self, i: int, starts, size, *, pad_value: float = 0.0):
    image, label = self.read(i)
    return extract_region(image, label, starts, size, pad_value=pad_value)


def default_patch_size(shapes: Sequence[Sequence[int]], multiple: int, *, max_voxels: int = 2**18) -> tuple[int, ...]:
  """A 3-D model's patch when ``--patch-size`` is not given.

  The median case shape rounded up to ``multiple`` per axis; while it holds
  more than ``max_voxels`` voxels (2^18: 64^3 or 16x128x128, what a
  2-core CPU trains on in a second per batch of two), its largest axis shrinks
  by ``multiple``.
  """
  median = np.median(np.asarray(shapes, np.float64), axis=0)
  patch = [int(-(-int(np.ceil(m)) // multiple) * multiple) for m in median]
  while int(np.prod(patch)) > max_voxels and max(patch) > multiple:
    axis = int(np.argmax(patch))
    patch[axis] -= multiple
  return tuple(patch)
