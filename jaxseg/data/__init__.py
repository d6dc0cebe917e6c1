"""Data sets: the synthetic cardiac MRI phantom and loaders for real layouts.

Data specs (``--data`` / ``--val-data``):

- ``synthetic`` or ``synthetic:TRAIN,VAL[,SIZE]`` (default 234,26,256, the DLI
  lab's split): generated in memory from the seed, intensities / 1024.
- ``sunnybrook:PATH``: DICOM + i-contours, intensities / 1024 (the lab's).
- ``acdc:PATH`` (binary LV) or ``acdc:PATH?classes=rv,myo,lv`` / ``?classes=all``.
- ``atria:PATH``: 2018 atrial challenge, ``<case>/lgemri.nrrd`` + ``laendo.nrrd``.
- ``folder:PATH``: ``PATH/images/<case>.<ext>`` + ``PATH/labels/<case>.<ext>``.

File data sets are z-scored per slice (except Sunnybrook), volumes are cut
into slices along the first array axis, and slices of different sizes are
zero-padded at the bottom/right to the largest. Every problem with a file
raises :class:`~jaxseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxseg.data import acdc, atria, folder, sunnybrook, synthetic
from jaxseg.data.batching import augment_batch, batches, crop_to, epoch_order, num_batches, pad_to_multiple
from jaxseg.data.io import Geometry, read_image, write_image
from jaxseg.data.validate import normalize
from jaxseg.errors import ConfigError, DataError

__all__ = [
    "Dataset", "load", "train_val", "split_by_case", "parse_spec", "SCHEMES",
    "batches", "num_batches", "epoch_order", "augment_batch", "pad_to_multiple", "crop_to",
    "read_image", "write_image", "Geometry", "normalize", "image_to_slices",
    "normalization_for",
]

SCHEMES = ("synthetic", "sunnybrook", "acdc", "atria", "folder")
SYNTHETIC_DEFAULT = (234, 26, 256)


@dataclasses.dataclass
class Dataset:
  """Slices ready for a 2-D model.

  Attributes:
    images: float32 (N, H, W, C), normalised.
    labels: int32 (N, H, W) in [0, num_classes).
    cases: str (N,): the case (patient / volume / file) each slice comes from.
    name: where the data came from (the spec, and "[train]"/"[val]" parts).
    normalization: how images were normalised ("div1024" or "zscore"), so
      `predict` can treat new images the same way.
  """
  images: np.ndarray
  labels: np.ndarray
  cases: np.ndarray
  name: str
  normalization: str = "zscore"

  def __len__(self) -> int:
    return len(self.labels)

  def padded_to(self, multiple: int) -> "Dataset":
    """The slices zero-padded at the bottom/right to a multiple of `multiple`
    (labels padded with background), for models that need such sizes."""
    images, _ = pad_to_multiple(self.images, multiple)
    labels, _ = pad_to_multiple(self.labels, multiple)
    return Dataset(images, labels, self.cases, self.name, self.normalization)

  def subset(self, mask_or_index, name: str | None = None) -> "Dataset":
    """The slices selected by a boolean mask or index array."""
    return Dataset(self.images[mask_or_index], self.labels[mask_or_index],
                   self.cases[mask_or_index], name or self.name, self.normalization)


def parse_spec(spec: str) -> tuple[str, object]:
  """'scheme:arg' -> (scheme, parsed arg); DataError for anything else.

  For synthetic the arg is (train, val, size); for acdc (path, classes);
  for the other schemes the path.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise DataError(f"empty data spec; expected one of {', '.join(SCHEMES)}")
  scheme, sep, arg = spec.partition(":")
  scheme = scheme.strip().lower()
  if scheme not in SCHEMES:
    raise DataError(f"unknown data spec {spec!r}; expected synthetic[:TRAIN,VAL[,SIZE]] "
                    f"or sunnybrook:PATH, acdc:PATH, atria:PATH, folder:PATH")
  if scheme == "synthetic":
    if not sep:
      return scheme, SYNTHETIC_DEFAULT
    parts = arg.split(",")
    try:
      if len(parts) not in (2, 3):
        raise ValueError
      numbers = [int(p.strip()) for p in parts]
    except ValueError:
      raise DataError(f"data spec {spec!r}: expected synthetic:TRAIN,VAL[,SIZE] with integers") from None
    train, val, size = numbers + [SYNTHETIC_DEFAULT[2]] * (3 - len(numbers))
    if train < 1 or val < 0 or not 16 <= size <= 4096:
      raise DataError(f"data spec {spec!r}: need TRAIN >= 1, VAL >= 0 and 16 <= SIZE <= 4096")
    if (train + val) * size * size > 2**30:
      raise DataError(f"data spec {spec!r}: {train + val} images of {size}x{size} would need "
                      f"more than 4 GiB of memory")
    return scheme, (train, val, size)
  if not arg.strip():
    raise DataError(f"data spec {spec!r}: missing path ({scheme}:PATH)")
  if scheme == "acdc":
    path, q, query = arg.partition("?classes=")
    return scheme, (path, acdc.parse_classes(query) if q else ("lv",))
  return scheme, arg


def normalization_for(spec: str) -> str:
  """The intensity normalisation the spec's images get ("div1024" or "zscore")."""
  scheme, _ = parse_spec(spec)
  return "div1024" if scheme in ("synthetic", "sunnybrook") else "zscore"


def image_to_slices(array: np.ndarray, *, normalization: str = "zscore",
                    channels: bool = False, path="image") -> np.ndarray:
  """An array from read_image -> normalised float32 slices (N, H, W, C).

  Used by `predict` on new images: a 2-D image gives one slice, a 3-D volume
  one per index of its first axis (as the loaders cut volumes).
  """
  from jaxseg.data import validate
  return normalize(validate.image_slices(array, path, channels=channels), normalization)


def _synthetic(train: int, val: int, size: int, seed: int, spec: str):
  sets = []
  for split, count in (("train", train), ("val", val)):
    images, labels = synthetic.generate(count, size=size, seed=seed, split=split)
    cases = np.asarray([f"synthetic-{split}-{i:04d}" for i in range(count)], dtype=str)
    sets.append(Dataset(normalize(images[..., None], "div1024"), labels, cases,
                        f"{spec}[{split}]", "div1024"))
  return sets[0], sets[1]


def load(spec: str, *, num_classes: int = 2, seed: int = 0) -> tuple[Dataset, Dataset | None]:
  """Loads a data spec.

  Args:
    spec: see the module docstring.
    num_classes: the model's classes; labels must lie in [0, num_classes)
      (1 means one sigmoid output, i.e. binary labels 0/1).
    seed: generates the synthetic data; unused by file specs.

  Returns:
    (train, val) for synthetic specs, (all, None) for file specs.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
  label_classes = max(int(num_classes), 2)
  scheme, arg = parse_spec(spec)
  if scheme == "synthetic":
    return _synthetic(*arg, seed=seed, spec=spec)
  if scheme == "acdc":
    path, classes = arg
    images, labels, cases = acdc.load(path, num_classes=label_classes, classes=classes)
  else:
    loader = {"sunnybrook": sunnybrook.load, "atria": atria.load, "folder": folder.load}[scheme]
    images, labels, cases = loader(arg, num_classes=label_classes)
  return Dataset(images, labels, cases, spec, normalization_for(spec)), None


def split_by_case(ds: Dataset, val_fraction: float = 0.1, *, seed: int = 0) -> tuple[Dataset, Dataset]:
  """Holds out a fraction of the cases (never slices of one case in both)."""
  if not 0 < val_fraction < 1:
    raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}")
  cases = np.unique(ds.cases)
  if len(cases) < 2:
    raise DataError(f"{ds.name}: only {len(cases)} case, cannot hold out validation cases; "
                    f"give a validation data set (--val-data)")
  n_val = min(max(1, round(val_fraction * len(cases))), len(cases) - 1)
  val_cases = cases[np.random.default_rng([int(seed) % 2**63, 2]).permutation(len(cases))[:n_val]]
  is_val = np.isin(ds.cases, val_cases)
  return ds.subset(~is_val, f"{ds.name}[train]"), ds.subset(is_val, f"{ds.name}[val]")


def train_val(spec: str, val_spec: str | None = None, *, num_classes: int = 2,
              val_fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
  """Training and validation sets.

  With ``val_spec`` the validation set is that spec (its val part if it is
  synthetic). Without it, a synthetic spec uses its own split and a file spec
  holds out ``val_fraction`` of its cases, chosen from ``seed``.
  """
  train, val = load(spec, num_classes=num_classes, seed=seed)
  if val_spec is not None:
    other, other_val = load(val_spec, num_classes=num_classes, seed=seed)
    val = other_val if other_val is not None else other
  elif val is None:
    train, val = split_by_case(train, val_fraction, seed=seed)
  if train.images.shape[-1] != val.images.shape[-1]:
    raise DataError(f"{val.name}: {val.images.shape[-1]} image channels, but {train.name} has "
                    f"{train.images.shape[-1]}")
  return train, val
