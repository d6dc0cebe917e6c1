"""Image files through SimpleITK: read, write, geometry, and file checks.

Every read goes through :func:`read_image`, which turns any SimpleITK failure
(unknown format, random bytes, truncated data) into a one-line
:class:`~jaxseg.errors.DataError` naming the file. SimpleITK happily reads a
truncated ``.nii``/``.nii.gz`` (the missing voxels come back as zeros), so
NIfTI files and gzip streams are checked for completeness here first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from jaxseg.errors import DataError

# File name endings SimpleITK reads, for directory scans (longest first).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm",
                  ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".vtk",
                  ".hdr", ".img", ".gipl", ".gipl.gz", ".img.gz")


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Physical placement of an image, in SimpleITK (x, y[, z]) order."""
  size: tuple[int, ...]
  spacing: tuple[float, ...]
  origin: tuple[float, ...]
  direction: tuple[float, ...]

  @classmethod
  def of(cls, image: sitk.Image) -> "Geometry":
    return cls(tuple(image.GetSize()), tuple(image.GetSpacing()),
               tuple(image.GetOrigin()), tuple(image.GetDirection()))


def split_suffix(name: str) -> tuple[str, str]:
  """('case_01', '.nii.gz') for 'case_01.nii.gz'; handles double endings."""
  lower = name.lower()
  for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
    if lower.endswith(suffix):
      return name[:-len(suffix)], name[-len(suffix):]
  stem, ext = os.path.splitext(name)
  return stem, ext


def _read_all_bytes(path: Path) -> bytes:
  """The file's bytes, gunzipped if it ends in .gz (checking the gzip stream)."""
  if path.name.lower().endswith(".gz"):
    try:
      with gzip.open(path, "rb") as f:
        return f.read()
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from None
  return path.read_bytes()


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64


def _check_nifti(path: Path) -> None:
  """Raise DataError if a NIfTI file holds fewer bytes than its header says."""
  data = _read_all_bytes(path)
  if len(data) < 348:
    raise DataError(f"{path}: not a NIfTI file (only {len(data)} bytes)")
  for endian in "<>":
    (hdr_size,) = struct.unpack(endian + "i", data[:4])
    if hdr_size in (348, 540):
      break
  else:
    raise DataError(f"{path}: not a NIfTI file (bad header size)")
  if hdr_size == 348:
    dims = struct.unpack(endian + "8h", data[40:56])
    (datatype, bitpix) = struct.unpack(endian + "hh", data[70:74])
    (offset,) = struct.unpack(endian + "f", data[108:112])
  else:
    if len(data) < 540:
      raise DataError(f"{path}: truncated NIfTI-2 header")
    (datatype, bitpix) = struct.unpack(endian + "hh", data[12:16])
    dims = struct.unpack(endian + "8q", data[16:80])
    (offset,) = struct.unpack(endian + "q", data[168:176])
  ndim = dims[0]
  if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]):
    raise DataError(f"{path}: NIfTI header has invalid dimensions {dims}")
  if path.name.lower().endswith((".hdr", ".hdr.gz")):
    return  # data in a separate .img file; SimpleITK checks that one
  needed = int(max(offset, hdr_size)) + int(np.prod(dims[1:ndim + 1])) * max(bitpix, 8) // 8
  if len(data) < needed:
    raise DataError(f"{path}: truncated NIfTI file ({len(data)} of {needed} bytes)")
  # ITK's NIfTI reader turns NaN into 0 without a word, so look at float voxels here.
  if datatype in _NIFTI_FLOATS:
    start = int(max(offset, hdr_size))
    voxels = np.frombuffer(data, endian + _NIFTI_FLOATS[datatype], int(np.prod(dims[1:ndim + 1])), start)
    bad = int(voxels.size - np.isfinite(voxels).sum())
    if bad:
      raise DataError(f"{path}: image has {bad} NaN or infinite values")


def check_readable(path: str | os.PathLike) -> Path:
  """The path as a Path, or DataError if it is missing, a directory or empty."""
  path = Path(path)
  if not path.exists():
    raise DataError(f"{path}: no such file")
  if path.is_dir():
    raise DataError(f"{path}: is a directory, expected an image file")
  if path.stat().st_size == 0:
    raise DataError(f"{path}: empty file")
  return path


def _itk_reason(error: Exception) -> str:
  """The useful line of a multi-line SimpleITK/ITK exception message."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  useful = [l for l in lines if "ERROR" in l or l.startswith("[")] or lines[-1:] or ["unknown error"]
  reason = re.sub(r"^(?:ITK ERROR: |sitk::ERROR: )", "", useful[-1])
  return re.sub(r"\(0x[0-9a-fA-F]+\)", "", reason)[:200]


@contextlib.contextmanager
def _quiet_stderr():
  """Silences file descriptor 2 for the duration (ITK's MetaIO and GDCM print
  read problems straight to std::cerr; the DataError says what went wrong)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, AttributeError, ValueError):
    yield
    return
  try:
    with open(os.devnull, "wb") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def read_sitk(path: str | os.PathLike) -> sitk.Image:
  """sitk.ReadImage with every failure turned into a one-line DataError."""
  path = check_readable(path)
  lower = path.name.lower()
  if lower.endswith((".nii", ".nii.gz")):
    _check_nifti(path)
  elif lower.endswith(".gz"):
    _read_all_bytes(path)
  try:
    with _quiet_stderr():
      image = sitk.ReadImage(str(path))
  except RuntimeError as e:
    raise DataError(f"{path}: cannot read image: corrupt, truncated or not an image "
                    f"({_itk_reason(e)})") from None
  except Exception as e:  # noqa: BLE001 - any library failure is a bad file here
    raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
  return image


def image_array(image: sitk.Image, path) -> np.ndarray:
  """The pixels in NumPy (z, y, x[, channel]) order, checked for dimensions."""
  dim = image.GetDimension()
  if dim not in (2, 3):
    raise DataError(f"{path}: {dim}-D image, expected 2-D or 3-D")
  try:
    array = sitk.GetArrayFromImage(image)
  except RuntimeError as e:
    raise DataError(f"{path}: cannot convert pixels ({_itk_reason(e)})") from None
  spatial = array.shape[:dim]
  if sum(s > 1 for s in spatial[-2:]) < 2:
    raise DataError(f"{path}: image of size {tuple(image.GetSize())} is 1-D, expected 2-D or 3-D")
  if array.dtype.kind == "c":
    raise DataError(f"{path}: complex pixels are not supported")
  return array


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
  """Reads an image with SimpleITK.

  Returns:
    (array, geometry): the array in NumPy order -- (H, W) for 2-D, (D, H, W)
    for 3-D, with a trailing channel axis for multi-component pixels -- and the
    image's size/spacing/origin/direction.
  """
  image = read_sitk(path)
  return image_array(image, path), Geometry.of(image)


def write_image(path: str | os.PathLike, array: np.ndarray,
                geometry: Geometry | None = None) -> None:
  """Writes an array (NumPy order, as read_image returns it) with SimpleITK.

  With ``geometry`` of the same dimension, the spacing, origin and direction
  are copied onto the written image, so a prediction lands where its input was.
  Integer labels written to 8-bit formats (PNG, JPEG, BMP) are cast to uint8,
  and a one-slice volume written to them becomes a 2-D image.
  """
  path = Path(path)
  array = np.asarray(array)
  two_d_only = path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
  if two_d_only and array.ndim == 3 and array.shape[0] == 1 and (
      geometry is None or len(geometry.size) == 3):
    # A single-slice volume (e.g. one DICOM frame) written to a 2-D format.
    array = array[0]
    if geometry is not None:
      d = geometry.direction
      geometry = Geometry(geometry.size[:2], geometry.spacing[:2], geometry.origin[:2],
                          (d[0], d[1], d[3], d[4]))
  if array.dtype == np.bool_:
    array = array.astype(np.uint8)
  if two_d_only and array.dtype.kind in "iu":
    if array.size and (array.min() < 0 or array.max() > 255):
      raise DataError(f"{path}: values outside 0..255 cannot be stored as 8-bit")
    array = array.astype(np.uint8)
  is_vector = geometry is not None and array.ndim == len(geometry.size) + 1
  image = sitk.GetImageFromArray(array, isVector=is_vector)
  if geometry is not None:
    if image.GetDimension() != len(geometry.size):
      raise DataError(f"{path}: array of shape {array.shape} does not match geometry "
                      f"of size {geometry.size}")
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
  if path.parent and not path.parent.exists():
    raise DataError(f"{path}: directory {path.parent} does not exist")
  try:
    sitk.WriteImage(image, str(path), useCompression=path.name.lower().endswith(".gz"))
  except RuntimeError as e:
    raise DataError(f"{path}: cannot write image ({_itk_reason(e)})") from None
