"""Checks and conversions shared by the file loaders.

Images become float32 slices (N, H, W, C); labels int32 slices (N, H, W) in
[0, num_classes). Masks stored as 0/255 are recognised and mapped to 0/1;
any other value outside the classes is a DataError naming the file.
"""

from __future__ import annotations

import numpy as np

from jaxseg.errors import ConfigError, DataError

NORMALIZATIONS = ("zscore", "div1024", "none")


def normalize(slices: np.ndarray, method: str = "zscore") -> np.ndarray:
  """Intensity normalisation of (N, H, W, C) slices as a stack of 2-D images.

  ``zscore`` (= ``zscore-slice``) z-scores each slice and channel; any other
  scheme of :mod:`jaxseg.data.normalization` without fitted statistics works too
  (``zscore-volume`` / ``zscore-foreground`` then treat the stack as one case).
  """
  from jaxseg.data.normalization import Normalization
  try:
    return Normalization(method).apply(np.asarray(slices, np.float32))
  except ConfigError as e:
    raise DataError(str(e).removeprefix("--normalize: ")) from None


def case_image(array: np.ndarray, path, *, channels: bool = False) -> np.ndarray:
  """Image array from read_image -> float32 ``(*spatial, C)``, checked finite.

  ``channels`` says the last axis holds pixel components.
  """
  a = np.asarray(array)
  if not channels:
    a = a[..., None]
  if a.ndim not in (3, 4):
    raise DataError(f"{path}: array of shape {np.shape(array)} is not a 2-D image or 3-D volume")
  if a.dtype.kind not in "biuf":
    raise DataError(f"{path}: unsupported pixel type {a.dtype}")
  a = a.astype(np.float32)
  if not np.all(np.isfinite(a)):
    bad = int(np.size(a) - np.isfinite(a).sum())
    raise DataError(f"{path}: image has {bad} NaN or infinite values")
  return a


def image_slices(array: np.ndarray, path, *, channels: bool = False) -> np.ndarray:
  """Image array from read_image -> float32 (N, H, W, C), checked finite.

  A 2-D image gives N=1; a 3-D volume is cut along its first array axis.
  """
  a = case_image(array, path, channels=channels)
  return a[None] if a.ndim == 3 else a


def case_label(array: np.ndarray, path, num_classes: int, *, channels: bool = False) -> np.ndarray:
  """Label array from read_image -> int32 ``(*spatial)`` in [0, num_classes)."""
  labels = label_slices(array, path, num_classes, channels=channels)
  spatial = np.ndim(array) - (1 if channels else 0)
  return labels[0] if spatial == 2 else labels


def label_slices(array: np.ndarray, path, num_classes: int, *,
                 channels: bool = False) -> np.ndarray:
  """Label array from read_image -> int32 (N, H, W) in [0, num_classes).

  0/255 masks map to 0/1. A multi-component label (e.g. an RGB PNG mask) is
  accepted only if all its components are equal.
  """
  a = np.asarray(array)
  if channels:
    if not np.all(a == a[..., :1]):
      raise DataError(f"{path}: label has {a.shape[-1]} differing channels, expected one")
    a = a[..., 0]
  if a.ndim == 2:
    a = a[None]
  if a.ndim != 3:
    raise DataError(f"{path}: label of shape {np.shape(array)} is not a 2-D image or 3-D volume")
  if a.dtype.kind == "f":
    if not np.all(np.isfinite(a)):
      raise DataError(f"{path}: label has NaN or infinite values")
    if not np.all(a == np.round(a)):
      raise DataError(f"{path}: label has non-integer values")
  elif a.dtype.kind not in "biu":
    raise DataError(f"{path}: unsupported label pixel type {a.dtype}")
  return check_labels(a, path, num_classes)


def check_labels(a: np.ndarray, path, num_classes: int) -> np.ndarray:
  """Maps 0/255 masks to 0/1 and rejects values outside [0, num_classes)."""
  values = np.unique(a)
  if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
    return (a == 255).astype(np.int32)
  bad = values[(values < 0) | (values >= num_classes)]
  if bad.size:
    shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
    raise DataError(f"{path}: label values {shown} outside the {num_classes} classes "
                    f"0..{num_classes - 1} (0/255 masks are mapped to 0/1)")
  return a.astype(np.int32)


def check_same_shape(image: np.ndarray, label: np.ndarray, image_path, label_path) -> None:
  """DataError unless image slices (N,H,W,C) and label slices (N,H,W) align."""
  if image.shape[:3] != label.shape:
    raise DataError(f"{label_path}: label shape {label.shape[1:]} x {label.shape[0]} slices "
                    f"differs from image {image_path} shape {image.shape[1:3]} x "
                    f"{image.shape[0]} slices")
