"""Every bad input a user can give the data layer is one DataError naming the file."""

import gzip

import numpy as np
import pytest

from jaxseg import data
from jaxseg.errors import ConfigError, DataError, UserError


def _folder(root, layouts, image=None, label=None, iname="a.nrrd", lname="a.nrrd"):
  image = np.arange(20, dtype=np.float32).reshape(4, 5) if image is None else image
  label = np.zeros((4, 5), np.uint8) if label is None else label
  (root / "images").mkdir(parents=True, exist_ok=True)
  (root / "labels").mkdir(parents=True, exist_ok=True)
  ip = layouts.image(root / "images" / iname, image) if iname else None
  lp = layouts.image(root / "labels" / lname, label) if lname else None
  return ip, lp


def _raises(spec, *needles, **kw):
  with pytest.raises(DataError) as info:
    data.load(spec, **kw)
  msg = str(info.value)
  assert "\n" not in msg, msg
  for needle in needles:
    assert str(needle) in msg, (needle, msg)
  return msg


def test_data_error_is_a_user_error():
  assert issubclass(DataError, UserError)


@pytest.mark.parametrize("scheme", ["folder", "sunnybrook", "acdc", "atria"])
def test_missing_path(tmp_path, scheme):
  _raises(f"{scheme}:{tmp_path / 'nope'}", tmp_path / "nope", "no such directory")


@pytest.mark.parametrize("scheme", ["sunnybrook", "acdc", "atria"])
def test_empty_directory(tmp_path, scheme):
  _raises(f"{scheme}:{tmp_path}", tmp_path, "found")


def test_empty_folder_layout(tmp_path):
  _raises(f"folder:{tmp_path}", tmp_path / "images", "missing directory")
  (tmp_path / "images").mkdir()
  (tmp_path / "labels").mkdir()
  _raises(f"folder:{tmp_path}", tmp_path / "images", "no image files")


def test_image_without_label_and_label_without_image(tmp_path, layouts):
  ip, _ = _folder(tmp_path / "x", layouts, lname=None)
  _raises(f"folder:{tmp_path / 'x'}", ip, "image without a label")
  _, lp = _folder(tmp_path / "y", layouts, iname=None)
  _raises(f"folder:{tmp_path / 'y'}", lp, "label without an image")


def test_atria_and_acdc_missing_partners(tmp_path, layouts):
  vol = np.zeros((2, 4, 5), np.uint8)
  ip = layouts.image(tmp_path / "a" / "c1" / "lgemri.nrrd", vol)
  _raises(f"atria:{tmp_path / 'a'}", ip, "image without a label")
  layouts.image(tmp_path / "a" / "c1" / "laendo.nrrd", vol)
  lp = layouts.image(tmp_path / "a" / "c2" / "laendo.nrrd", vol)
  _raises(f"atria:{tmp_path / 'a'}", lp, "label without an image")
  ip = layouts.image(tmp_path / "d" / "patient001" / "patient001_frame01.nii.gz", vol)
  _raises(f"acdc:{tmp_path / 'd'}", ip, "image without a label")
  layouts.image(tmp_path / "d" / "patient001" / "patient001_frame01_gt.nii.gz", vol)
  lp = layouts.image(tmp_path / "d" / "patient002" / "patient002_frame01_gt.nii.gz", vol)
  _raises(f"acdc:{tmp_path / 'd'}", lp, "label without an image")


def test_sunnybrook_contour_without_image_and_bad_contour(tmp_path, layouts):
  img = np.zeros((8, 8), np.int16)
  root = layouts.sunnybrook(tmp_path / "sb", {"SC-HF-I-1": ("0004", {48: (img, [[1, 1], [5, 1], [5, 5]])})})
  ctr = layouts.contour(root / "ctr" / "SC-HF-I-02" / "contours-manual" / "IRCCI-expert"
                        / "IM-0001-0010-icontour-manual.txt", [[1, 1], [5, 1], [5, 5]])
  _raises(f"sunnybrook:{root}", ctr, "label without an image")
  ctr.unlink()
  bad = next(root.rglob("*icontour-manual.txt"))
  bad.write_text("1.0 2.0\nnot numbers\n")
  _raises(f"sunnybrook:{root}", bad, "expected 'x y'")
  bad.write_text("1.0 2.0\n3.0 4.0\n")
  _raises(f"sunnybrook:{root}", bad, "at least 3")
  bad.write_text("1 1\n5 1\n5 5\n")
  next(root.rglob("*.dcm")).unlink()
  _raises(f"sunnybrook:{root}", bad, "label without an image")


def test_shape_mismatch(tmp_path, layouts):
  _, lp = _folder(tmp_path, layouts, label=np.zeros((4, 6), np.uint8))
  _raises(f"folder:{tmp_path}", lp, "differs from image")


def test_slice_count_mismatch(tmp_path, layouts):
  _, lp = _folder(tmp_path, layouts, image=np.zeros((3, 4, 5), np.float32),
                  label=np.zeros((2, 4, 5), np.uint8))
  _raises(f"folder:{tmp_path}", lp, "differs from image")


def test_label_values_outside_classes(tmp_path, layouts):
  _, lp = _folder(tmp_path, layouts, label=np.array([[0, 1, 7, 0, 0]] * 4, np.uint8))
  _raises(f"folder:{tmp_path}", lp, "label values 7", "2 classes")
  ds, _ = data.load(f"folder:{tmp_path}", num_classes=8)
  assert ds.labels.max() == 7
  _folder(tmp_path, layouts, label=np.array([[0, 255, 255, 0, 0]] * 4, np.uint8))
  ds, _ = data.load(f"folder:{tmp_path}")
  np.testing.assert_array_equal(ds.labels[0], np.array([[0, 1, 1, 0, 0]] * 4))
  _folder(tmp_path, layouts, label=np.array([[0, 1, 255, 0, 0]] * 4, np.uint8))
  _raises(f"folder:{tmp_path}", lp, "label values 255")
  _folder(tmp_path, layouts, label=np.array([[0, -1, 1, 0, 0]] * 4, np.int16))
  _raises(f"folder:{tmp_path}", lp, "label values -1")
  _folder(tmp_path, layouts, label=np.array([[0, 0.5, 1, 0, 0]] * 4, np.float32))
  _raises(f"folder:{tmp_path}", lp, "non-integer")


def test_single_sigmoid_output_takes_binary_labels(tmp_path, layouts):
  _folder(tmp_path, layouts, label=np.array([[0, 1, 1, 0, 0]] * 4, np.uint8))
  ds, _ = data.load(f"folder:{tmp_path}", num_classes=1)
  assert ds.labels.max() == 1
  with pytest.raises(ConfigError, match="num_classes"):
    data.load(f"folder:{tmp_path}", num_classes=0)


def test_truncated_gzip(tmp_path, layouts):
  ip, _ = _folder(tmp_path, layouts, image=np.random.default_rng(0).normal(size=(6, 30, 40)).astype(np.float32),
                  label=np.zeros((6, 30, 40), np.uint8), iname="a.nii.gz", lname="a.nii.gz")
  raw = ip.read_bytes()
  ip.write_bytes(raw[:len(raw) // 2])
  _raises(f"folder:{tmp_path}", ip, "gzip")


def test_truncated_uncompressed_nifti_and_nrrd(tmp_path, layouts):
  for name in ("a.nii", "a.nrrd"):
    root = tmp_path / name
    ip, _ = _folder(root, layouts, image=np.ones((6, 30, 40), np.float32),
                    label=np.zeros((6, 30, 40), np.uint8), iname=name, lname="a.nrrd")
    raw = ip.read_bytes()
    ip.write_bytes(raw[:len(raw) - 500])
    _raises(f"folder:{root}", ip)


def test_random_bytes_and_wrong_extension(tmp_path, layouts):
  ip, _ = _folder(tmp_path, layouts, iname="a.png", image=np.zeros((4, 5), np.uint8), lname="a.png")
  ip.write_bytes(np.random.default_rng(0).bytes(300))
  _raises(f"folder:{tmp_path}", ip, "cannot read image")
  ip.unlink()
  odd = tmp_path / "images" / "a.xyz"
  odd.write_text("hello, I am not an image\n")
  _raises(f"folder:{tmp_path}", odd, "cannot read image")
  odd.unlink()
  empty = tmp_path / "images" / "a.nrrd"
  empty.write_bytes(b"")
  _raises(f"folder:{tmp_path}", empty, "empty file")


def test_4d_and_1d_images(tmp_path, layouts):
  ip, _ = _folder(tmp_path / "4d", layouts, image=np.zeros((2, 3, 4, 5), np.float32),
                  iname="a.nii.gz", lname="a.nrrd")
  _raises(f"folder:{tmp_path / '4d'}", ip, "4-D image")
  ip, _ = _folder(tmp_path / "1d", layouts, image=np.zeros((1, 9), np.float32))
  _raises(f"folder:{tmp_path / '1d'}", ip, "1-D")
  ip, _ = _folder(tmp_path / "1dv", layouts, image=np.zeros((5, 1, 9), np.float32),
                  label=np.zeros((5, 1, 9), np.uint8))
  _raises(f"folder:{tmp_path / '1dv'}", ip, "1-D")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(tmp_path, layouts, bad):
  image = np.ones((4, 5), np.float32)
  image[2, 3] = bad
  ip, _ = _folder(tmp_path, layouts, image=image, iname="a.mha")
  _raises(f"folder:{tmp_path}", ip, "NaN or infinite")


@pytest.mark.parametrize("spec", ["mnist", "synthetics", "nifti:/tmp/x", "/data/images", ""])
def test_unknown_spec(spec):
  _raises(spec, "data spec")


@pytest.mark.parametrize("spec", ["synthetic:a,b", "synthetic:10", "synthetic:1,2,3,4",
                                  "synthetic:0,2", "synthetic:-4,2", "synthetic:4,-1",
                                  "synthetic:4,2,8", "synthetic:4,2,64.5", "synthetic:",
                                  "synthetic:100000,0,4096"])
def test_malformed_synthetic_numbers(spec):
  _raises(spec, spec)


def test_missing_path_in_spec():
  _raises("folder:", "missing path")


def test_read_image_errors(tmp_path):
  with pytest.raises(DataError, match="no such file"):
    data.read_image(tmp_path / "none.nrrd")
  with pytest.raises(DataError, match="is a directory"):
    data.read_image(tmp_path)
  gz = tmp_path / "x.nii.gz"
  gz.write_bytes(gzip.compress(b"\0" * 100))
  with pytest.raises(DataError, match="x.nii.gz"):
    data.read_image(gz)


def test_split_needs_two_cases(tmp_path, layouts):
  _folder(tmp_path, layouts)
  with pytest.raises(DataError, match="--val-data"):
    data.train_val(f"folder:{tmp_path}")
  with pytest.raises(ConfigError, match="val_fraction"):
    data.train_val(f"folder:{tmp_path}", val_fraction=1.5)
