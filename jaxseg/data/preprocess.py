"""Cases made ready for training, and a cache on disk that holds them (as nnU-Net does).

A case is preprocessed in three steps, each on the whole case:

1. resampled to a common ``spacing`` (``--spacing``) with SimpleITK's
   resampler, linearly for the image and nearest-neighbour for the label;
   the new grid has the same centre and ``round(size * old / new)`` voxels
   per axis;
2. normalised (:class:`~jaxseg.data.normalization.Normalization`, on the
   whole resampled case, as `predict` does on a new image);
3. cropped to the bounding box of its nonzero image voxels and its labelled
   voxels (nnU-Net's crop): what is cut away is air, labelled background, so
   a prediction of background there is exact.

:class:`CaseCache` writes every preprocessed case of a data set to a
directory (one ``.npy`` per image, label and foreground sample) reading one
case at a time, and serves whole cases or patches from it through
memory-mapped reads: a run's memory is bounded by the cases in flight, not by
the data set. The cache is keyed by a fingerprint of the cases' sources and
the preprocessing, so a resumed run reuses it and a changed file rebuilds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Callable, Iterable, Sequence

import numpy as np

from jaxseg.data.cases import Case, CaseRef
from jaxseg.data.normalization import Normalization
from jaxseg.errors import ConfigError, DataError

CACHE_VERSION = 1
# Foreground voxels kept per case and class for foreground-centred patches (nnU-Net keeps 10,000).
FOREGROUND_SAMPLES = 10_000


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What happens to every case before a model sees it.

  normalization: the fitted intensity normalisation.
  spacing: target mm per array axis, (z, y, x) for volumes; None keeps each
    case's own. A 2-D case takes the last two values; two values for a
    volume resample it in plane and keep its slice spacing (what a 2-D model
    trained slice by slice needs).
  crop: crop to the nonzero/labelled bounding box (training cache only;
    `predict` never crops).
  """
  normalization: Normalization
  spacing: tuple[float, ...] | None = None
  crop: bool = True

  def to_dict(self) -> dict:
    return {"normalization": self.normalization.to_dict(),
            "spacing": None if self.spacing is None else list(self.spacing), "crop": self.crop}

  def target(self, spacing: Sequence[float]) -> tuple[float, ...] | None:
    """The spacing a case of ``spacing`` is resampled to, or None if it stays."""
    if self.spacing is None:
      return None
    target = tuple(float(s) for s in self.spacing[-len(spacing):])
    if len(target) < len(spacing):  # Y,X for a volume: in plane only, each case keeps its slice spacing
      target = tuple(float(s) for s in spacing[:len(spacing) - len(target)]) + target
    if np.allclose(target, spacing, rtol=1e-6, atol=0):
      return None
    return target


def parse_spacing(text) -> tuple[float, ...] | None:
  """'1.5,1,1' -> (1.5, 1.0, 1.0); ConfigError for anything but 2 or 3 positive numbers."""
  if text is None:
    return None
  values = text if isinstance(text, (list, tuple)) else str(text).split(",")
  try:
    out = tuple(float(v) for v in values)
  except (TypeError, ValueError):
    raise ConfigError(f"--spacing: expected Z,Y,X (or Y,X) in mm, got {text!r}") from None
  if len(out) not in (2, 3) or not all(np.isfinite(out)) or min(out) <= 0:
    raise ConfigError(f"--spacing: expected 2 or 3 positive numbers (Z,Y,X in mm), got {text!r}")
  return out


def resample(array: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float], *,
             labels: bool = False, shape: Sequence[int] | None = None) -> np.ndarray:
  """``array`` ``(*spatial[, C])`` sampled every ``spacing`` mm -> the same field of view every ``new_spacing``.

  SimpleITK's resampler, linear (``labels=False``, per channel) or
  nearest-neighbour (``labels=True``; integers stay integers). The output has
  ``shape`` voxels (default ``round(size * spacing / new_spacing)``, at least
  1) on a grid with the same centre; samples beyond the input's outer voxel
  centres take the nearest voxel. Resampling back with ``shape`` the original
  size returns to the original grid.
  """
  import SimpleITK as sitk
  nd = len(spacing)
  array = np.asarray(array)
  vector = array.ndim == nd + 1
  size = array.shape[:nd]
  if shape is None:
    shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, new_spacing))
  shape = tuple(int(v) for v in shape)
  dtype = array.dtype
  work = array.astype(np.float32) if not labels else array.astype(np.int32)
  image = sitk.GetImageFromArray(work, isVector=vector)
  image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
  origin = [(n - 1) * s / 2 - (m - 1) * t / 2 for n, s, m, t in zip(size, spacing, shape, new_spacing)]
  f = sitk.ResampleImageFilter()
  f.SetSize([int(v) for v in reversed(shape)])
  f.SetOutputSpacing([float(v) for v in reversed(new_spacing)])
  f.SetOutputOrigin([float(v) for v in reversed(origin)])
  f.SetOutputDirection(tuple(np.eye(nd).ravel().tolist()))
  f.SetInterpolator(sitk.sitkNearestNeighbor if labels else sitk.sitkLinear)
  f.SetDefaultPixelValue(0)
  f.UseNearestNeighborExtrapolatorOn()
  out = sitk.GetArrayFromImage(f.Execute(image))
  if vector and out.ndim == nd:  # a one-component vector image comes back without its axis
    out = out[..., None]
  return out.astype(dtype if labels else np.float32)


def resample_case(case: Case, spacing: Sequence[float] | None) -> Case:
  """The case on a grid of ``spacing`` (None: unchanged)."""
  if spacing is None:
    return case
  image = resample(case.image, case.spacing, spacing)
  label = resample(case.label, case.spacing, spacing, labels=True, shape=image.shape[:-1])
  return case.replace(image=image, label=label, spacing=tuple(float(s) for s in spacing))


def crop_box(image: np.ndarray, label: np.ndarray) -> tuple[tuple[int, int], ...]:
  """(lo, hi) per spatial axis of the voxels with a nonzero image (any channel) or a label > 0;
  the whole case when there are none."""
  mask = np.any(image != 0, axis=-1) | (label > 0)
  if not mask.any():
    return tuple((0, s) for s in label.shape)
  box = []
  for axis in range(mask.ndim):
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
    box.append((int(hit[0]), int(hit[-1]) + 1))
  return tuple(box)


def preprocess(case: Case, prep: Preprocessing) -> tuple[Case, dict]:
  """One case resampled, normalised and cropped; and how (for mapping results back).

  Returns:
    (case, info): info has ``original_shape``, ``original_spacing``,
    ``resampled_shape`` and ``box`` (the crop in resampled voxels).
  """
  target = prep.target(case.spacing)
  resampled = resample_case(case, target)
  box = crop_box(resampled.image, resampled.label) if prep.crop else tuple((0, s) for s in resampled.label.shape)
  index = tuple(slice(lo, hi) for lo, hi in box)
  image = prep.normalization.apply(resampled.image)[index]
  out = resampled.replace(image=np.ascontiguousarray(image), label=np.ascontiguousarray(resampled.label[index]))
  info = {"original_shape": list(case.label.shape), "original_spacing": list(case.spacing),
          "resampled_shape": list(resampled.label.shape), "box": [list(b) for b in box]}
  return out, info


def foreground_sample(label: np.ndarray, index: int, limit: int = FOREGROUND_SAMPLES) -> np.ndarray:
  """int32 ``(M, 1 + ndim)``: class, then voxel coordinates, of at most ``limit``
  voxels of every foreground class present (drawn without replacement, seeded by
  the case's ``index`` and the class)."""
  rows = []
  flat = label.ravel()
  for c in np.unique(flat):
    if c <= 0:
      continue
    where = np.flatnonzero(flat == c)
    if len(where) > limit:
      where = np.sort(np.random.default_rng([int(index), int(c), 5]).choice(where, limit, replace=False))
    coords = np.stack(np.unravel_index(where, label.shape), axis=1)
    rows.append(np.concatenate([np.full((len(where), 1), c), coords], axis=1).astype(np.int32))
  return np.concatenate(rows) if rows else np.zeros((0, 1 + label.ndim), np.int32)


def fingerprint(refs: Sequence[CaseRef], prep: Preprocessing, extra: dict | None = None) -> str:
  """A hash of what the cache of ``refs`` under ``prep`` holds."""
  blob = json.dumps({"version": CACHE_VERSION, "prep": prep.to_dict(), "extra": extra or {},
                     "cases": [[r.name, r.group, r.source] for r in refs]}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


class CaseCache:
  """Preprocessed cases in a directory: ``index.json`` and per case ``NNNNN.image.npy``
  ``(*spatial, C)`` float32, ``NNNNN.label.npy`` (uint8 or int32) and ``NNNNN.fg.npy``
  (:func:`foreground_sample`).

  Reads open the ``.npy`` files memory-mapped, copy what was asked for and
  close them again, so nothing of a case stays in memory between reads (and
  the object pickles as a path plus the index, for Grain's worker processes).
  """

  def __init__(self, directory: str, index: dict):
    self.directory = directory
    self.index = index
    self.cases = index["cases"]

  # -- building --------------------------------------------------------------

  @classmethod
  def open_or_build(cls, refs: Sequence[CaseRef], prep: Preprocessing, directory: str, *,
                    check: Callable[[Case, CaseRef], None] | None = None, extra: dict | None = None,
                    log: Callable[[str], None] | None = None) -> "CaseCache":
    """The cache of ``refs`` in ``directory``: reused when its fingerprint matches, else (re)built.

    Building reads, checks (``check(case, ref)`` may raise), preprocesses and
    writes one case at a time; ``index.json`` is written last, so a build cut
    short is rebuilt next time.
    """
    key = fingerprint(refs, prep, extra)
    existing = cls.open(directory)
    if existing is not None and existing.index.get("fingerprint") == key:
      return existing
    if os.path.isdir(directory):
      shutil.rmtree(directory)
    os.makedirs(directory)
    entries = []
    channels = None
    for i, ref in enumerate(refs):
      case = ref.read()
      if check is not None:
        check(case, ref)
      if channels is not None and case.image.shape[-1] != channels:
        raise DataError(f"{ref.name}: {case.image.shape[-1]} image channels, the other cases have {channels}")
      channels = case.image.shape[-1]
      done, info = preprocess(case, prep)
      del case
      stem = os.path.join(directory, f"{i:05d}")
      np.save(stem + ".image.npy", done.image.astype(np.float32), allow_pickle=False)
      label_dtype = np.uint8 if done.label.max(initial=0) < 256 else np.int32
      np.save(stem + ".label.npy", done.label.astype(label_dtype), allow_pickle=False)
      np.save(stem + ".fg.npy", foreground_sample(done.label, i), allow_pickle=False)
      entries.append({"name": ref.name, "group": ref.group, "shape": list(done.label.shape),
                      "spacing": list(done.spacing), **info})
      if log is not None and (i + 1) % 50 == 0:
        log(f"preprocessed {i + 1}/{len(refs)} cases into {directory}")
    index = {"version": CACHE_VERSION, "fingerprint": key, "channels": channels,
             "preprocessing": prep.to_dict(), "cases": entries}
    tmp = os.path.join(directory, "index.json.tmp")
    with open(tmp, "w") as f:
      json.dump(index, f)
    os.replace(tmp, os.path.join(directory, "index.json"))
    return cls(directory, index)

  @classmethod
  def open(cls, directory: str) -> "CaseCache | None":
    """The finished cache in ``directory``, or None."""
    path = os.path.join(directory, "index.json")
    try:
      with open(path) as f:
        index = json.load(f)
    except (OSError, ValueError):
      return None
    if index.get("version") != CACHE_VERSION:
      return None
    return cls(directory, index)

  # -- reading ---------------------------------------------------------------

  def __len__(self) -> int:
    return len(self.cases)

  @property
  def channels(self) -> int:
    return int(self.index["channels"])

  def name(self, i: int) -> str:
    return self.cases[i]["name"]

  def shape(self, i: int) -> tuple[int, ...]:
    return tuple(self.cases[i]["shape"])

  def spacing(self, i: int) -> tuple[float, ...]:
    return tuple(self.cases[i]["spacing"])

  def _path(self, i: int, kind: str) -> str:
    return os.path.join(self.directory, f"{i:05d}.{kind}.npy")

  def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole preprocessed case: (image ``(*spatial, C)`` float32, label int32)."""
    image = np.load(self._path(i, "image"), allow_pickle=False)
    label = np.load(self._path(i, "label"), allow_pickle=False).astype(np.int32)
    return image, label

  def read_region(self, i: int, starts: Sequence[int], size: Sequence[int], *,
                  pad_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The box ``starts .. starts + size`` of case ``i`` (image, label int32); the part
    outside the case is ``pad_value`` / label 0. Reads only that box from disk."""
    image_map = np.load(self._path(i, "image"), mmap_mode="r", allow_pickle=False)
    label_map = np.load(self._path(i, "label"), mmap_mode="r", allow_pickle=False)
    try:
      return extract_region(image_map, label_map, starts, size, pad_value=pad_value)
    finally:
      del image_map, label_map  # unmaps the files

  def foreground(self, i: int) -> np.ndarray:
    """:func:`foreground_sample` of case ``i``."""
    return np.load(self._path(i, "fg"), allow_pickle=False)

  def size_bytes(self) -> int:
    """Bytes of the cached images and labels."""
    return sum(os.path.getsize(self._path(i, k)) for i in range(len(self)) for k in ("image", "label"))


def extract_region(image, label, starts: Sequence[int], size: Sequence[int], *,
                   pad_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """Copies of the box ``starts .. starts + size`` of an image ``(*spatial, C)`` and its label,
  padded with ``pad_value`` (label 0) where the box leaves the arrays."""
  shape = label.shape
  out_image = np.full(tuple(size) + image.shape[-1:], pad_value, np.float32)
  out_label = np.zeros(tuple(size), np.int32)
  src, dst = [], []
  for s, n, full in zip(starts, size, shape):
    lo, hi = max(int(s), 0), min(int(s) + int(n), full)
    if hi <= lo:
      return out_image, out_label
    src.append(slice(lo, hi))
    dst.append(slice(lo - int(s), hi - int(s)))
  out_image[tuple(dst)] = image[tuple(src)]
  out_label[tuple(dst)] = label[tuple(src)]
  return out_image, out_label


def stream(refs: Iterable[CaseRef], prep: Preprocessing, *,
           check: Callable[[Case, CaseRef], None] | None = None):
  """Yields ``(ref, raw case, preprocessed case, info)`` one case at a time (nothing is cached)."""
  for ref in refs:
    case = ref.read()
    if check is not None:
      check(case, ref)
    done, info = preprocess(case, prep)
    yield ref, case, done, info
