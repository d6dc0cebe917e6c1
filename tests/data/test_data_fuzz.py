"""Property tests: random bytes and random small arrays give a clean load or a DataError."""

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from jaxseg import data
from jaxseg.errors import DataError

SETTINGS = settings(max_examples=int(os.environ.get("JAXSEG_FUZZ_EXAMPLES", 30)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
EXTS = [".png", ".nrrd", ".nii.gz", ".nii", ".mha", ".dcm", ".jpg", ".tif", ".mhd"]


def _valid_bytes(ext):
  """Bytes of a small valid image file of this format, to corrupt."""
  with tempfile.TemporaryDirectory() as d:
    path = Path(d) / ("v" + ext)
    arr = np.arange(48, dtype=np.uint8).reshape(6, 8) if ext in (".png", ".jpg", ".tif") else \
        np.arange(96, dtype=np.int16).reshape(2, 6, 8)
    if ext == ".dcm":
      arr = arr[0]
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path.read_bytes()


VALID = {ext: _valid_bytes(ext) for ext in (".png", ".nrrd", ".nii.gz", ".nii", ".mha", ".dcm")}


@st.composite
def file_bytes(draw):
  """Random bytes, or a valid file truncated or with a random stretch overwritten."""
  ext = draw(st.sampled_from(EXTS))
  kind = draw(st.sampled_from(["random", "truncate", "overwrite"]))
  if kind == "random" or ext not in VALID:
    return ext, draw(st.binary(min_size=0, max_size=600))
  raw = VALID[ext]
  if kind == "truncate":
    return ext, raw[:draw(st.integers(0, len(raw) - 1))]
  start = draw(st.integers(0, len(raw) - 1))
  patch = draw(st.binary(min_size=1, max_size=64))
  return ext, raw[:start] + patch + raw[start + len(patch):]


def _clean(fn):
  try:
    return fn()
  except DataError as e:
    assert "\n" not in str(e)
    return None


def _check(ds):
  if ds is not None:
    assert ds.images.dtype == np.float32 and np.all(np.isfinite(ds.images))
    assert ds.labels.dtype == np.int32 and ds.labels.min() >= 0 and ds.labels.max() < 2
    assert ds.images.shape[:3] == ds.labels.shape


@SETTINGS
@given(file_bytes())
def test_random_bytes_to_every_loader(case):
  ext, content = case
  good = np.zeros((6, 8), np.uint8)
  with tempfile.TemporaryDirectory() as d:
    root = Path(d)
    # read_image
    f = root / ("x" + ext)
    f.write_bytes(content)
    _clean(lambda: data.read_image(f))
    # folder: a bad image with a good label, and the reverse
    (root / "f" / "images").mkdir(parents=True)
    (root / "f" / "labels").mkdir(parents=True)
    (root / "f" / "images" / ("a" + ext)).write_bytes(content)
    sitk.WriteImage(sitk.GetImageFromArray(good), str(root / "f" / "labels" / "a.png"))
    _check(_clean(lambda: data.load(f"folder:{root / 'f'}")[0]))
    (root / "g" / "images").mkdir(parents=True)
    (root / "g" / "labels").mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(good), str(root / "g" / "images" / "a.png"))
    (root / "g" / "labels" / ("a" + ext)).write_bytes(content)
    _check(_clean(lambda: data.load(f"folder:{root / 'g'}")[0]))
    # atria, acdc, sunnybrook: the bytes in their file names
    vol = np.zeros((2, 6, 8), np.uint8)
    (root / "at" / "c").mkdir(parents=True)
    (root / "at" / "c" / "lgemri.nrrd").write_bytes(content)
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(root / "at" / "c" / "laendo.nrrd"))
    _check(_clean(lambda: data.load(f"atria:{root / 'at'}")[0]))
    (root / "ac" / "patient001").mkdir(parents=True)
    (root / "ac" / "patient001" / "patient001_frame01.nii.gz").write_bytes(content)
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(root / "ac" / "patient001" / "patient001_frame01_gt.nii.gz"))
    _check(_clean(lambda: data.load(f"acdc:{root / 'ac'}")[0]))
    img_dir = root / "sb" / "challenge_training" / "SC-N-2"
    ctr_dir = root / "sb" / "contours" / "SC-N-02" / "contours-manual" / "IRCCI-expert"
    img_dir.mkdir(parents=True)
    ctr_dir.mkdir(parents=True)
    (img_dir / "IM-0898-0020.dcm").write_bytes(content)
    (ctr_dir / "IM-0001-0020-icontour-manual.txt").write_text("1 1\n5 1\n5 5\n")
    _check(_clean(lambda: data.load(f"sunnybrook:{root / 'sb'}")[0]))
    (img_dir / "IM-0898-0020.dcm").write_bytes(VALID[".dcm"])
    (ctr_dir / "IM-0001-0020-icontour-manual.txt").write_bytes(content)
    _check(_clean(lambda: data.load(f"sunnybrook:{root / 'sb'}")[0]))


def arrays_with_specials():
  """Small 2-D to 4-D arrays; float ones may hold NaN and infinities."""
  return hnp.arrays(dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.float32]),
                    shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4))


@SETTINGS
@given(arrays_with_specials(), arrays_with_specials(),
       st.sampled_from([".nrrd", ".nii.gz", ".mha"]))
def test_random_small_arrays_in_folder(image, label, ext):
  with tempfile.TemporaryDirectory() as d:
    root = Path(d)
    (root / "images").mkdir()
    (root / "labels").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "images" / ("a" + ext)))
    sitk.WriteImage(sitk.GetImageFromArray(label), str(root / "labels" / ("a" + ext)))
    ds = _clean(lambda: data.load(f"folder:{root}")[0])
    _check(ds)
    if ds is not None:
      assert np.all(np.isfinite(image.astype(np.float64)))
      # SimpleITK may have stored a 4-D array as a 3-D multi-component image;
      # what loaded must be exactly the pixels written.
      written = sitk.ReadImage(str(root / "images" / ("a" + ext)))
      assert ds.images.shape[-1] == written.GetNumberOfComponentsPerPixel()
      assert ds.labels.size == np.prod(written.GetSize())
