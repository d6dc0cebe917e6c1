"""Issue 6: every bad input a user can give the `jaxseg` command is exit status 2,
one line on stderr naming the file or flag, no traceback, and no change to an
existing workdir (all its files hashed before and after).

In-process through `jaxseg.cli.main`. The cases that need a trained run are in
test_run_untouched.py (collected last, so that under xdist the other worker
keeps busy with these while one trains the run); test_cli_subprocess.py
checks a few cases through a real `python -m jaxseg` process.
"""

import gzip

import numpy as np
import pytest

from reliability_helpers import (assert_one_line_error, folder, phantom, run_cli, tree_hash,
                                 write)

# ---------------------------------------------------------------- flags and names

BAD_TRAIN_FLAGS = [
    pytest.param(["--epochs", "-1"], ["--epochs", "-1"], id="negative-epochs"),
    pytest.param(["--epochs", "0"], ["--epochs"], id="zero-epochs"),
    pytest.param(["--epochs", "two"], ["--epochs", "two"], id="epochs-not-a-number"),
    pytest.param(["--batch-size", "0"], ["--batch-size", "0"], id="zero-batch-size"),
    pytest.param(["--batch-size", "6", "--devices", "4"], ["--batch-size", "6", "divisible"],
                 id="batch-not-divisible-by-devices"),
    pytest.param(["--devices", "0"], ["--devices"], id="zero-devices"),
    pytest.param(["--lr", "nan"], ["--lr"], id="nan-lr"),
    pytest.param(["--model", "resnet"], ["--model", "resnet"], id="unknown-model"),
    pytest.param(["--loss", "focal"], ["--loss", "focal"], id="unknown-loss"),
    pytest.param(["--conv-impl", "fft"], ["--conv-impl", "fft"], id="unknown-conv-impl"),
    pytest.param(["--data", "imagenet:/x"], ["imagenet"], id="unknown-data-scheme"),
    pytest.param(["--data", "synthetic:8"], ["synthetic:8"], id="malformed-synthetic-spec"),
    pytest.param(["--data", "folder:"], ["folder:", "missing path"], id="data-spec-without-path"),
    pytest.param(["--val-data", "nope"], ["nope"], id="unknown-val-data"),
    pytest.param(["--parallel", "tpu"], ["--parallel", "tpu"], id="unknown-parallel"),
    pytest.param(["--resume", "--overwrite"], ["--resume", "--overwrite"], id="resume-and-overwrite"),
]


@pytest.mark.parametrize("argv, needles", BAD_TRAIN_FLAGS)
def test_train_bad_flag(tmp_path, capsys, argv, needles):
  work = tmp_path / "w"
  status, _, err = run_cli(capsys, "train", "--model", "cnn3", "--data", "synthetic:8,4,32",
                           "--batch-size", "4", "--workdir", work, *argv)
  assert_one_line_error(status, err, *needles)
  assert not work.exists()


def test_unknown_model_in_summary(capsys):
  status, _, err = run_cli(capsys, "summary", "--model", "resnet")
  assert_one_line_error(status, err, "resnet")


# ---------------------------------------------------------------- data files, through `train`


def _train_on(capsys, tmp_path, spec, *extra):
  """`jaxseg train --data SPEC` into a fresh workdir; the data is read before
  anything is written, so a bad file must leave no workdir behind."""
  work = tmp_path / "w"
  status, out, err = run_cli(capsys, "train", "--model", "cnn3", "--data", spec, "--batch-size", "2",
                             "--epochs", "1", "--workdir", work, "--quiet", *extra)
  assert not work.exists() or not any(work.iterdir()), sorted(p.name for p in work.iterdir())
  return status, out, err


def test_missing_data_path(tmp_path, capsys):
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'nowhere'}")
  assert_one_line_error(status, err, tmp_path / "nowhere", "no such directory")


def test_empty_data_directory(tmp_path, capsys):
  (tmp_path / "d").mkdir()
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, tmp_path / "d" / "images", "missing directory")
  (tmp_path / "d" / "images").mkdir()
  (tmp_path / "d" / "labels").mkdir()
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, tmp_path / "d" / "images", "no image files")


def test_empty_image_file(tmp_path, capsys):
  images, _ = folder(tmp_path / "d")
  images[0].write_bytes(b"")
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, images[0], "empty file")


def test_image_without_label(tmp_path, capsys):
  (img, lab), other = phantom(2)
  images, _ = folder(tmp_path / "d", [(img, None), other])
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, images[0], "image without a label")


def test_label_without_image(tmp_path, capsys):
  (img, lab), other = phantom(2)
  _, labels = folder(tmp_path / "d", [(None, lab), other])
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, labels[0], "label without an image")


def test_image_label_shape_mismatch(tmp_path, capsys):
  (img, lab), other = phantom(2)
  _, labels = folder(tmp_path / "d", [(img, lab[:-2]), other])
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  line = assert_one_line_error(status, err, labels[0], "shape")
  assert "(14, 16)" in line and "(16, 16)" in line  # both shapes named


@pytest.mark.parametrize("values, shown", [([0, 1, 3], "3"), ([0, 7, 255], "7, 255"),
                                           ([-1, 0, 1], "-1")])
def test_label_values_outside_the_classes(tmp_path, capsys, values, shown):
  (img, lab), other = phantom(2)
  bad = np.asarray(values, np.int16)[np.arange(lab.size).reshape(lab.shape) % len(values)]
  _, labels = folder(tmp_path / "d", [(img, bad), other])
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, labels[0], f"label values {shown} outside the 2 classes")


def test_label_values_beyond_num_classes_flag(tmp_path, capsys):
  (img, lab), other = phantom(2)
  _, labels = folder(tmp_path / "d", [(img, lab * 3), other])   # classes 0, 3
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}", "--num-classes", "3")
  assert_one_line_error(status, err, labels[0], "outside the 3 classes")


def test_truncated_gzip(tmp_path, capsys):
  images, _ = folder(tmp_path / "d", ext=".nii.gz")
  raw = images[0].read_bytes()
  assert gzip.decompress(raw)  # a valid file before we cut it
  images[0].write_bytes(raw[:len(raw) // 2])
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, images[0], "gzip")


def test_random_bytes_nrrd(tmp_path, capsys):
  _, labels = folder(tmp_path / "d")
  labels[1].write_bytes(np.random.default_rng(1).bytes(400))
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, labels[1], "cannot read image")


@pytest.mark.parametrize("name, content", [
    ("case0.png", "nrrd"),            # an NRRD file named .png
    ("case0.txt", "text"),            # not an image format at all
])
def test_wrong_extension(tmp_path, capsys, name, content):
  images, _ = folder(tmp_path / "d")
  target = tmp_path / "d" / "images" / name
  if content == "nrrd":
    images[0].rename(target)
  else:
    images[0].unlink()
    target.write_text("not an image\n")
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, target)


@pytest.mark.parametrize("shape, needle", [((2, 3, 16, 16), "4-D"), ((1, 16), "1-D"),
                                           ((3, 1, 16), "1-D")])
def test_wrong_number_of_dimensions(tmp_path, capsys, shape, needle):
  pairs = phantom(2)
  label = np.zeros(shape[-3:] if len(shape) == 4 else shape, np.uint8)
  pairs[0] = (np.ones(shape, np.float32), label)
  images, _ = folder(tmp_path / "d", pairs)
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, images[0], needle)


@pytest.mark.parametrize("bad, ext, dtype", [
    (np.nan, ".nrrd", np.float32), (np.inf, ".nrrd", np.float32), (-np.inf, ".mha", np.float64),
    # ITK's NIfTI reader silently turns NaN into 0: jaxseg checks the voxels itself
    (np.nan, ".nii.gz", np.float32), (np.inf, ".nii", np.float64)],
    ids=["nan-nrrd", "inf-nrrd", "-inf-mha", "nan-nii.gz", "inf-nii"])
def test_non_finite_image(tmp_path, capsys, bad, ext, dtype):
  pairs = phantom(2)
  image = pairs[1][0].astype(dtype)
  image[3, 4] = bad
  pairs[1] = (image, pairs[1][1])
  images, _ = folder(tmp_path / "d", pairs, ext=ext)
  status, _, err = _train_on(capsys, tmp_path, f"folder:{tmp_path / 'd'}")
  assert_one_line_error(status, err, images[1], "NaN or infinite")


# ---------------------------------------------------------------- no trained run


def test_evaluate_without_a_trained_workdir(tmp_path, capsys):
  status, _, err = run_cli(capsys, "evaluate", "--workdir", tmp_path / "none")
  assert_one_line_error(status, err, "--workdir", tmp_path / "none")
  (tmp_path / "empty").mkdir()
  status, _, err = run_cli(capsys, "evaluate", "--workdir", tmp_path / "empty")
  assert_one_line_error(status, err, "--workdir", "no checkpoint")
  assert not any((tmp_path / "empty").iterdir())


def test_predict_without_a_trained_workdir(tmp_path, capsys):
  image = write(tmp_path / "in.nrrd", phantom(1)[0][0])
  status, _, err = run_cli(capsys, "predict", "--workdir", tmp_path / "none", image, tmp_path / "o.nrrd")
  assert_one_line_error(status, err, "--workdir", tmp_path / "none")
  assert not (tmp_path / "o.nrrd").exists()


def test_resume_without_a_run(tmp_path, capsys):
  status, _, err = run_cli(capsys, "train", "--workdir", tmp_path / "none", "--resume")
  assert_one_line_error(status, err, "--resume", tmp_path / "none")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  before = tree_hash(tmp_path / "other")
  status, _, err = run_cli(capsys, "train", "--workdir", tmp_path / "other", "--resume")
  assert_one_line_error(status, err, "--resume", "no config.json")
  status, _, err = run_cli(capsys, "train", "--model", "cnn3", "--workdir", tmp_path / "other")
  assert_one_line_error(status, err, "--workdir", "not empty")
  assert tree_hash(tmp_path / "other") == before


def test_workdir_is_a_file(tmp_path, capsys):
  (tmp_path / "f").write_text("x")
  status, _, err = run_cli(capsys, "train", "--model", "cnn3", "--data", "synthetic:8,4,32",
                           "--batch-size", "4", "--workdir", tmp_path / "f")
  assert_one_line_error(status, err, "--workdir", "not a directory")
  assert (tmp_path / "f").read_text() == "x"

