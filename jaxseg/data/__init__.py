"""Data sets: the synthetic cardiac MRI phantom and loaders for real layouts.

Data specs (``--data`` / ``--val-data``):

- ``synthetic`` or ``synthetic:TRAIN,VAL[,SIZE]`` (default 234,26,256, the DLI
  lab's split): generated in memory from the seed, intensities / 1024.
- ``synthetic3d`` or ``synthetic3d:TRAIN,VAL[,SIZE]`` (default 48,8,64): the
  phantom as volumes of 16 thick slices (:mod:`jaxseg.data.synthetic3d`),
  z-scored per volume; the default data of the 3-D models.
- ``sunnybrook:PATH``: DICOM + i-contours, intensities / 1024 (the lab's).
- ``acdc:PATH`` (binary LV) or ``acdc:PATH?classes=rv,myo,lv`` / ``?classes=all``.
- ``atria:PATH``: 2018 atrial challenge, ``<case>/lgemri.nrrd`` + ``laendo.nrrd``.
- ``folder:PATH``: ``PATH/images/<case>.<ext>`` + ``PATH/labels/<case>.<ext>``.

Every loader yields cases (:mod:`jaxseg.data.cases`: one per file or volume,
raw intensities, spacing). Each case is normalised on its own
(:mod:`jaxseg.data.normalization`; ``--normalize``, by default ``div1024`` for
``synthetic`` and ``sunnybrook`` and ``zscore-foreground`` for the MR-like
file layouts), then cut into slices along its first array axis for the 2-D
models; slices of different sizes are zero-padded at the bottom/right to the
largest. A 3-D model takes the cases as volumes instead, listed by
:func:`case_refs` and read one at a time into a preprocessed cache
(:mod:`jaxseg.data.preprocess`). Every problem with a file raises
:class:`~jaxseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxseg.data import acdc, atria, folder, sunnybrook, synthetic, synthetic3d
from jaxseg.data import normalization as normalize_lib
from jaxseg.data.batching import augment_batch, batches, crop_to, epoch_order, num_batches, pad_to_multiple
from jaxseg.data.cases import Case, CaseRef, Volume, to_slices
from jaxseg.data.io import Geometry, read_image, write_image
from jaxseg.data.normalization import Normalization
from jaxseg.data.validate import normalize
from jaxseg.errors import ConfigError, DataError

__all__ = [
    "Dataset", "load", "train_val", "split_by_case", "parse_spec", "SCHEMES",
    "batches", "num_batches", "epoch_order", "augment_batch", "pad_to_multiple", "crop_to",
    "read_image", "write_image", "Geometry", "normalize", "image_to_slices",
    "normalization_for", "Case", "Volume", "Normalization", "load_cases", "split_cases",
    "to_dataset", "default_normalization", "CaseRef", "case_refs", "spec_dims", "train_val_refs",
]

SCHEMES = ("synthetic", "synthetic3d", "sunnybrook", "acdc", "atria", "folder")
SYNTHETIC_DEFAULT = (234, 26, 256)


@dataclasses.dataclass
class Dataset:
  """Slices ready for a 2-D model.

  Attributes:
    images: float32 (N, H, W, C), normalised.
    labels: int32 (N, H, W) in [0, num_classes).
    cases: str (N,): the case group (patient / volume / file) each slice comes from.
    name: where the data came from (the spec, and "[train]"/"[val]" parts).
    normalization: the :class:`Normalization` the images got, so that
      `predict` and `evaluate` can treat new images the same way.
    volumes: per case, which slices it holds, its own size and spacing
      (:class:`~jaxseg.data.cases.Volume`), for per-case evaluation.
  """
  images: np.ndarray
  labels: np.ndarray
  cases: np.ndarray
  name: str
  normalization: Normalization = Normalization("none")
  volumes: tuple = ()

  def __len__(self) -> int:
    return len(self.labels)

  def padded_to(self, multiple: int) -> "Dataset":
    """The slices zero-padded at the bottom/right to a multiple of `multiple`
    (labels padded with background), for models that need such sizes."""
    images, _ = pad_to_multiple(self.images, multiple)
    labels, _ = pad_to_multiple(self.labels, multiple)
    return dataclasses.replace(self, images=images, labels=labels)

  def subset(self, mask_or_index, name: str | None = None) -> "Dataset":
    """The slices selected by a boolean mask or index array (the volumes
    that are kept whole keep their per-case records)."""
    index = np.arange(len(self.labels))[mask_or_index]
    volumes, start = [], 0
    for v in self.volumes:
      kept = index[(index >= v.start) & (index < v.stop)]
      if len(kept) == v.stop - v.start and np.array_equal(kept, np.arange(v.start, v.stop)):
        at = int(np.searchsorted(index, v.start))
        volumes.append(dataclasses.replace(v, start=at, stop=at + len(kept)))
    return Dataset(self.images[index], self.labels[index], self.cases[index], name or self.name,
                   self.normalization, tuple(volumes))


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
    raise DataError(f"unknown data spec {spec!r}; expected synthetic[:TRAIN,VAL[,SIZE]], "
                    f"synthetic3d[:TRAIN,VAL[,SIZE]] or sunnybrook:PATH, acdc:PATH, atria:PATH, folder:PATH")
  if scheme == "synthetic3d":
    return scheme, synthetic3d.parse_spec(spec)
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


def default_normalization(spec: str) -> str:
  """The normalisation scheme a spec's images get unless ``--normalize`` says otherwise:
  ``div1024`` for synthetic and sunnybrook (the lab's), ``zscore-volume`` for
  synthetic3d (its volumes differ in gain and contrast), ``zscore-foreground``
  for the MR-like file layouts (acdc, atria, folder)."""
  scheme, _ = parse_spec(spec)
  if scheme == "synthetic3d":
    return "zscore-volume"
  return "div1024" if scheme in ("synthetic", "sunnybrook") else "zscore-foreground"


def spec_dims(spec: str) -> int | None:
  """2 or 3 when a spec's kind says whether it holds images or volumes
  (synthetic and sunnybrook: 2-D images; synthetic3d: volumes); None for
  file layouts, whose files decide."""
  scheme, _ = parse_spec(spec)
  return {"synthetic": 2, "sunnybrook": 2, "synthetic3d": 3}.get(scheme)


normalization_for = default_normalization


def image_to_slices(array: np.ndarray, *, normalization="zscore-foreground",
                    channels: bool = False, path="image") -> np.ndarray:
  """An array from read_image -> normalised float32 slices (N, H, W, C).

  Used by `predict` on new images: the image is one case, normalised as a
  whole (``normalization``: a scheme name, a :class:`Normalization` or its
  dict), then a 2-D image gives one slice and a 3-D volume one per index of
  its first axis (as the loaders cut volumes).
  """
  from jaxseg.data import validate
  if not isinstance(normalization, Normalization):
    normalization = Normalization.from_dict(normalization)
  image = normalization.apply(validate.case_image(array, path, channels=channels))
  return image[None] if image.ndim == 3 else image


def _synthetic_cases(train: int, val: int, size: int, seed: int):
  sets = []
  for split, count in (("train", train), ("val", val)):
    images, labels = synthetic.generate(count, size=size, seed=seed, split=split)
    sets.append([Case(f"synthetic-{split}-{i:04d}", images[i][..., None], labels[i], (1.0, 1.0))
                 for i in range(count)])
  return sets[0], sets[1]


def load_cases(spec: str, *, num_classes: int = 2, seed: int = 0) -> tuple[list[Case], list[Case] | None]:
  """The raw (not normalised) cases of a data spec.

  Returns:
    (train, val) for synthetic specs, (all, None) for file specs.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
  label_classes = max(int(num_classes), 2)
  scheme, arg = parse_spec(spec)
  if scheme == "synthetic":
    return _synthetic_cases(*arg, seed=seed)
  if scheme == "synthetic3d":
    train, val, size = arg
    if (train + val) * synthetic3d.DEPTH * size * size > synthetic3d.MAX_VOXELS_IN_MEMORY:
      raise DataError(f"data spec {spec!r}: {train + val} volumes of {synthetic3d.DEPTH}x{size}x{size} "
                      f"would need more than {synthetic3d.MAX_VOXELS_IN_MEMORY * 4 // 2**30} GiB of memory "
                      f"as slices (a 3-D model reads them one at a time)")
    refs = synthetic3d.list_cases(*arg, seed=seed)
    return [r.read() for r in refs[0]], [r.read() for r in refs[1]]
  if scheme == "acdc":
    path, classes = arg
    return acdc.load(path, num_classes=label_classes, classes=classes), None
  loader = {"sunnybrook": sunnybrook.load, "atria": atria.load, "folder": folder.load}[scheme]
  return loader(arg, num_classes=label_classes), None


def case_refs(spec: str, *, num_classes: int = 2, seed: int = 0) -> tuple[list[CaseRef], list[CaseRef] | None]:
  """The cases of a data spec as :class:`CaseRef` s, none of them read yet.

  Returns:
    (train, val) for the synthetic specs, (all, None) for file specs. The
    2-D ``synthetic`` phantom and ``sunnybrook`` are read at once (their
    cases are small 2-D images).
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
  label_classes = max(int(num_classes), 2)
  scheme, arg = parse_spec(spec)
  if scheme == "synthetic3d":
    return synthetic3d.list_cases(*arg, seed=seed)
  if scheme == "acdc":
    path, classes = arg
    return acdc.list_cases(path, num_classes=label_classes, classes=classes), None
  if scheme == "atria":
    return atria.list_cases(arg, num_classes=label_classes), None
  if scheme == "folder":
    return folder.list_cases(arg, num_classes=label_classes), None
  train, val = load_cases(spec, num_classes=num_classes, seed=seed)
  return [CaseRef.of(c) for c in train], None if val is None else [CaseRef.of(c) for c in val]


def fit_normalization(normalize, spec: str, cases: list[Case]) -> Normalization:
  """``normalize`` (None: the spec's default; a scheme name; or a fitted
  :class:`Normalization`, used as it is) with statistics from ``cases``."""
  if isinstance(normalize, Normalization):
    return normalize
  return normalize_lib.fit(normalize or default_normalization(spec),
                           [c.image for c in cases], [c.label for c in cases])


def to_dataset(cases: list[Case], name: str, normalization: Normalization) -> Dataset:
  """Normalises every case and stacks their slices into a :class:`Dataset`."""
  normalized = [c.replace(image=normalization.apply(c.image)) for c in cases]
  images, labels, groups, volumes = to_slices(normalized, name)
  return Dataset(images, labels, groups, name, normalization, volumes)


def load(spec: str, *, num_classes: int = 2, seed: int = 0,
         normalize=None, spacing=None) -> tuple[Dataset, Dataset | None]:
  """Loads a data spec into slices.

  Args:
    spec: see the module docstring.
    num_classes: the model's classes; labels must lie in [0, num_classes)
      (1 means one sigmoid output, i.e. binary labels 0/1).
    seed: generates the synthetic data; unused by file specs.
    normalize: the scheme (None: the spec's default) or a fitted
      :class:`Normalization`; ``ct`` statistics come from the (train) cases.
    spacing: resample every case to it first (see :func:`train_val`).

  Returns:
    (train, val) for synthetic specs, (all, None) for file specs.
  """
  train, val = load_cases(spec, num_classes=num_classes, seed=seed)
  if spacing is not None:
    train = resample_cases(train, spacing)
    val = None if val is None else resample_cases(val, spacing)
  norm = fit_normalization(normalize, spec, train)
  if val is not None:
    return to_dataset(train, f"{spec}[train]", norm), to_dataset(val, f"{spec}[val]", norm)
  return to_dataset(train, spec, norm), None


def split_cases(cases: list[Case], val_fraction: float = 0.1, *, seed: int = 0,
                name: str = "data") -> tuple[list[Case], list[Case]]:
  """Holds out a fraction of the case groups (patients), chosen from ``seed``."""
  if not 0 < val_fraction < 1:
    raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}")
  groups = np.unique(np.asarray([c.group for c in cases], dtype=str))
  if len(groups) < 2:
    raise DataError(f"{name}: only {len(groups)} case, cannot hold out validation cases; "
                    f"give a validation data set (--val-data)")
  n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
  val_groups = set(groups[np.random.default_rng([int(seed) % 2**63, 2]).permutation(len(groups))[:n_val]])
  return [c for c in cases if c.group not in val_groups], [c for c in cases if c.group in val_groups]


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
              val_fraction: float = 0.1, seed: int = 0, normalize=None,
              spacing=None) -> tuple[Dataset, Dataset]:
  """Training and validation sets, both normalised as the training set says.

  With ``val_spec`` the validation set is that spec (its val part if it is
  synthetic). Without it, a synthetic spec uses its own split and a file spec
  holds out ``val_fraction`` of its case groups, chosen from ``seed``.
  ``normalize`` is a scheme (None: the default of ``spec``) whose statistics
  are learnt from the training cases only, or a fitted :class:`Normalization`.
  ``spacing`` (z, y, x mm; a 2-D case takes y, x) resamples every case first
  (:func:`jaxseg.data.preprocess.resample_case`).
  """
  train, val, train_name, val_name = _train_val_split(load_cases, spec, val_spec, num_classes=num_classes,
                                                      val_fraction=val_fraction, seed=seed)
  if spacing is not None:
    train, val = resample_cases(train, spacing), resample_cases(val, spacing)
  norm = fit_normalization(normalize, spec, train)
  train_ds, val_ds = to_dataset(train, train_name, norm), to_dataset(val, val_name, norm)
  if train_ds.images.shape[-1] != val_ds.images.shape[-1]:
    raise DataError(f"{val_ds.name}: {val_ds.images.shape[-1]} image channels, but {train_ds.name} has "
                    f"{train_ds.images.shape[-1]}")
  return train_ds, val_ds


def _train_val_split(lister, spec, val_spec, *, num_classes, val_fraction, seed):
  """(train, val, train_name, val_name) from ``lister`` (load_cases or case_refs), as :func:`train_val` splits."""
  train, val = lister(spec, num_classes=num_classes, seed=seed)
  train_name, val_name = (f"{spec}[train]", f"{spec}[val]")
  if val_spec is not None:
    other, other_val = lister(val_spec, num_classes=num_classes, seed=seed)
    val, val_name = (other_val, f"{val_spec}[val]") if other_val is not None else (other, val_spec)
  if val is None:
    train, val = split_cases(train, val_fraction, seed=seed, name=spec)
  elif val_spec is not None and spec.partition(":")[0].strip().lower() not in ("synthetic", "synthetic3d"):
    train_name = spec
  return train, val, train_name, val_name


def train_val_refs(spec: str, val_spec: str | None = None, *, num_classes: int = 2,
                   val_fraction: float = 0.1, seed: int = 0):
  """The training and validation cases of :func:`train_val` (the same split) as
  :class:`CaseRef` s, none read: ``(train, val, train_name, val_name)``."""
  return _train_val_split(case_refs, spec, val_spec, num_classes=num_classes, val_fraction=val_fraction,
                          seed=seed)


def resample_cases(cases: list[Case], spacing) -> list[Case]:
  """Every case resampled to ``spacing`` (its last ``ndim`` values), linear for images, nearest for labels."""
  from jaxseg.data import preprocess
  prep = preprocess.Preprocessing(Normalization("none"), spacing=tuple(spacing))
  return [preprocess.resample_case(c, prep.target(c.spacing)) for c in cases]
