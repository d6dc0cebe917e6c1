"""`folder:PATH`: PATH/images/<case>.<ext> and PATH/labels/<case>.<ext>.

Images and labels pair by case name (the file name without its ending, so
`a.nii.gz` pairs with `a.nii.gz` or `a.nrrd`). Any SimpleITK format; 2-D
images or 3-D volumes; each file is one case, named by its stem. The
default normalisation is ``zscore-foreground`` (per case, see
:mod:`jaxseg.data.normalization`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from jaxseg.data import io, validate
from jaxseg.data.cases import Case, CaseRef, file_source
from jaxseg.errors import DataError


def _index(directory: Path) -> dict[str, Path]:
  files = {}
  for p in sorted(directory.iterdir()):
    if p.name.startswith(".") or p.is_dir():
      continue
    if p.name.lower().endswith((".raw", ".img", ".zraw")) and not p.name.lower().endswith(".img.gz"):
      continue  # data halves of .mhd/.nhdr/.hdr headers
    stem, _ = io.split_suffix(p.name)
    if stem in files:
      raise DataError(f"{p}: two files for case {stem!r} ({files[stem].name} and {p.name})")
    files[stem] = p
  return files


def read_case(image_path, label_path, num_classes: int, name: str, group: str = "") -> Case:
  """One image/label pair -> a checked :class:`Case` (raw intensities, spacing in mm)."""
  image = io.read_sitk(image_path)
  array = io.image_array(image, image_path)
  channels = image.GetNumberOfComponentsPerPixel() > 1
  pixels = validate.case_image(array, image_path, channels=channels)
  label = io.read_sitk(label_path)
  label_array = io.image_array(label, label_path)
  labels = validate.case_label(label_array, label_path, num_classes,
                               channels=label.GetNumberOfComponentsPerPixel() > 1)
  if pixels.shape[:-1] != labels.shape:
    raise DataError(f"{label_path}: label shape {labels.shape} differs from image "
                    f"{image_path} shape {pixels.shape[:-1]}")
  spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
  return Case(name, pixels, labels, spacing[-labels.ndim:], group)


def load(path, *, num_classes: int = 2) -> list[Case]:
  """Reads every pair; returns the cases sorted by name."""
  return [ref.read() for ref in list_cases(path, num_classes=num_classes)]


def list_cases(path, *, num_classes: int = 2) -> list[CaseRef]:
  """Every pair as a :class:`CaseRef` (sorted by name), checked for pairing but not read."""
  root = Path(path)
  if not root.is_dir():
    raise DataError(f"{root}: no such directory (folder:PATH needs PATH/images and PATH/labels)")
  image_dir, label_dir = root / "images", root / "labels"
  for d in (image_dir, label_dir):
    if not d.is_dir():
      raise DataError(f"{d}: missing directory (folder:PATH needs PATH/images and PATH/labels)")
  images, labels = _index(image_dir), _index(label_dir)
  for case in sorted(images):
    if case not in labels:
      raise DataError(f"{images[case]}: image without a label (expected {label_dir}/{case}.*)")
  for case in sorted(labels):
    if case not in images:
      raise DataError(f"{labels[case]}: label without an image (expected {image_dir}/{case}.*)")
  if not images:
    raise DataError(f"{image_dir}: no image files")
  return [CaseRef(case, case, functools.partial(read_case, images[case], labels[case], num_classes, case),
                  file_source(images[case], labels[case])) for case in sorted(images)]
