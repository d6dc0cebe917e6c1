"""`folder:PATH`: PATH/images/<case>.<ext> and PATH/labels/<case>.<ext>.

Images and labels pair by case name (the file name without its ending, so
`a.nii.gz` pairs with `a.nii.gz` or `a.nrrd`). Any SimpleITK format; 2-D
images or 3-D volumes, cut into slices along the first array axis. Each
slice is z-scored.
"""

from __future__ import annotations

from pathlib import Path

from jaxseg.data import io, validate
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


def load_pair(image_path, label_path, num_classes: int, normalization: str = "zscore"):
  """One image/label pair -> (images (N,H,W,C), labels (N,H,W)), checked."""
  image = io.read_sitk(image_path)
  array = io.image_array(image, image_path)
  channels = image.GetNumberOfComponentsPerPixel() > 1
  images = validate.normalize(validate.image_slices(array, image_path, channels=channels),
                              normalization)
  label = io.read_sitk(label_path)
  label_array = io.image_array(label, label_path)
  labels = validate.label_slices(label_array, label_path, num_classes,
                                 channels=label.GetNumberOfComponentsPerPixel() > 1)
  validate.check_same_shape(images, labels, image_path, label_path)
  return images, labels


def load(path, *, num_classes: int = 2):
  """Reads every pair; returns (images, labels, cases)."""
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
  pieces = []
  for case in sorted(images):
    x, y = load_pair(images[case], labels[case], num_classes)
    pieces.append((x, y, case))
  return validate.stack(pieces, str(root))
