"""Cases: the unit every loader yields, and their 2-D slice view.

A data set is a list of :class:`Case` objects, one per file or volume: its
name (the file name without extension, used in per-case reports), the
group it belongs to (the patient; held-out splits never divide a group), the
raw image ``(*spatial, C)``, the label ``(*spatial)`` and the spacing in mm
per array axis. Normalisation works on whole cases (:mod:`jaxseg.data.normalization`);
a 2-D model sees the slices of every case (:func:`to_slices`: a volume is cut
along its first array axis, a 2-D image is one slice); a 3-D model can take
the cases as they are.

A :class:`CaseRef` names a case without holding its pixels: the file
loaders list their cases as references, so that a 3-D model's data set is
read one case at a time (:mod:`jaxseg.data.preprocess`), never all at once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from jaxseg.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
  """One image (2-D) or volume (3-D) with its label.

  Attributes:
    name: file or volume name without extension (unique in a data set).
    image: float32 ``(*spatial, C)``, raw intensities (not normalised).
    label: int32 ``(*spatial)`` in ``[0, num_classes)``.
    spacing: mm per spatial axis, in array (NumPy) order, e.g. (z, y, x).
    group: the patient the case belongs to (defaults to ``name``).
  """
  name: str
  image: np.ndarray
  label: np.ndarray
  spacing: tuple[float, ...]
  group: str = ""

  def __post_init__(self):
    if not self.group:
      object.__setattr__(self, "group", self.name)
    if self.image.shape[:-1] != self.label.shape:
      raise DataError(f"{self.name}: label shape {self.label.shape} differs from image shape "
                      f"{self.image.shape[:-1]}")
    if len(self.spacing) != self.label.ndim:
      raise DataError(f"{self.name}: {len(self.spacing)} spacings for a {self.label.ndim}-D image")

  @property
  def ndim(self) -> int:
    """Spatial dimensions (2 or 3)."""
    return self.label.ndim

  def slices(self) -> tuple[np.ndarray, np.ndarray]:
    """``(D, H, W, C)`` images and ``(D, H, W)`` labels; a 2-D case gives D = 1."""
    if self.ndim == 2:
      return self.image[None], self.label[None]
    return self.image, self.label

  def replace(self, **kw) -> "Case":
    return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class CaseRef:
  """A case not yet read: its name, group, how to read it and what identifies its content.

  ``read`` is a picklable callable (a ``functools.partial`` of a module-level
  reader) returning the :class:`Case`; ``source`` is a string that changes
  when the case's content may have (file paths with sizes and modification
  times, or the phantom's parameters), used to key preprocessed caches.
  """
  name: str
  group: str
  read: Callable[[], Case]
  source: str

  @classmethod
  def of(cls, case: Case) -> "CaseRef":
    """A reference to a case already in memory."""
    return cls(case.name, case.group, _Given(case), f"memory:{case.name}:{id(case)}")


@dataclasses.dataclass(frozen=True, eq=False)
class _Given:
  case: Case

  def __call__(self) -> Case:
    return self.case


def file_source(*paths) -> str:
  """The ``source`` of a case read from files: each path with its size and mtime."""
  import os
  parts = []
  for p in paths:
    st = os.stat(p)
    parts.append(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}")
  return "|".join(parts)


@dataclasses.dataclass(frozen=True)
class Volume:
  """Where a case's slices lie in a :class:`~jaxseg.data.Dataset` and its own geometry.

  Slices ``start:stop`` of the data set, cropped to ``shape`` (H, W), stacked
  back form the case (a 2-D case: one slice, ``ndim`` 2).
  """
  name: str
  group: str
  start: int
  stop: int
  shape: tuple[int, int]
  spacing: tuple[float, ...]
  ndim: int


def to_slices(cases: Sequence[Case], name: str):
  """Stacks the slices of every case, zero-padding H/W at the bottom/right to the largest.

  Returns ``(images (N,H,W,C) float32, labels (N,H,W) int32, groups (N,) str,
  volumes tuple[Volume])``; the padding is 0 in the images (the mean after
  z-scoring, black after /1024) and label 0.
  """
  if not cases:
    raise DataError(f"{name}: no images found")
  channels = {c.image.shape[-1] for c in cases}
  if len(channels) > 1:
    raise DataError(f"{name}: images have different channel counts {sorted(channels)}")
  pieces = [c.slices() for c in cases]
  h = max(p[0].shape[1] for p in pieces)
  w = max(p[0].shape[2] for p in pieces)
  n = sum(len(p[1]) for p in pieces)
  images = np.zeros((n, h, w, channels.pop()), np.float32)
  labels = np.zeros((n, h, w), np.int32)
  groups, volumes, start = [], [], 0
  for case, (img, lab) in zip(cases, pieces):
    stop = start + len(lab)
    images[start:stop, :img.shape[1], :img.shape[2]] = img
    labels[start:stop, :lab.shape[1], :lab.shape[2]] = lab
    groups.extend([case.group] * len(lab))
    volumes.append(Volume(case.name, case.group, start, stop, tuple(lab.shape[1:]),
                          tuple(float(s) for s in case.spacing), case.ndim))
    start = stop
  return images, labels, np.asarray(groups, dtype=str), tuple(volumes)


def check_unique_names(cases: Sequence[Case], name: str) -> None:
  seen = {}
  for c in cases:
    if c.name in seen:
      raise DataError(f"{name}: two cases named {c.name!r}")
    seen[c.name] = c
