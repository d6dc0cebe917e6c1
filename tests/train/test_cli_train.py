"""`jaxseg train/evaluate/predict/search` through the CLI entry point (in-process)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from jaxseg import cli
from train_helpers import TINY_DATA

TINY = ["--model", "cnn3", "--loss", "ce", "--data", TINY_DATA, "--batch-size", "4", "--lr", "3e-3"]


def _run(capsys, *argv):
  status = cli.main(list(argv))
  out = capsys.readouterr()
  return status, out.out, out.err


@pytest.mark.parametrize("argv, needle", [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-2"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "6", "--devices", "4"], "not divisible"),
    (["--lr", "-1"], "--lr"),
    (["--model", "nope"], "nope"),
    (["--loss", "nope"], "nope"),
    (["--conv-impl", "nope"], "nope"),
    (["--data", "nope:/x"], "nope"),
    (["--data", "folder:/does/not/exist"], "/does/not/exist"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--devices", "8", "--batch-size", "8"], "only 4 available"),
    (["--parallel", "vmap"], "--parallel"),
    (["--coordinator", "nohost", "--num-processes", "2"], "--coordinator"),
    (["--process-id", "3", "--num-processes", "2", "--coordinator", "127.0.0.1:1"], "--process-id"),
])
def test_train_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, needle):
  status, out, err = _run(capsys, "train", "--workdir", str(tmp_path / "w"), *TINY, *argv)
  assert status == 2
  assert len(err.strip().splitlines()) == 1 and needle in err, err
  assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_resume_without_workdir_is_one_line_exit_2(capsys):
  status, _, err = _run(capsys, "train", *TINY, "--resume")
  assert status == 2 and len(err.strip().splitlines()) == 1 and "--workdir" in err


def test_predict_and_evaluate_without_a_run_are_one_line_exit_2(tmp_path, capsys):
  img = tmp_path / "in.nrrd"
  sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(img))
  for argv in (["predict", "--workdir", str(tmp_path / "none"), str(img), str(tmp_path / "o.nrrd")],
               ["evaluate", "--workdir", str(tmp_path / "none")],
               ["evaluate", "--workdir", str(tmp_path)]):
    status, _, err = _run(capsys, *argv)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--workdir" in err, err


def test_train_json_evaluate_and_predict_a_3d_volume(tmp_path, capsys):
  work = str(tmp_path / "run")
  status, out, _ = _run(capsys, "train", *TINY, "--epochs", "2", "--workdir", work, "--json")
  assert status == 0
  result = json.loads(out.strip().splitlines()[-1])
  for k in ("val_dice", "val_loss", "val_accuracy"):
    assert 0 <= result[k] and np.isfinite(result[k])
  # evaluate reproduces the final val metrics of train exactly
  status, out, _ = _run(capsys, "evaluate", "--workdir", work, "--json")
  ev = json.loads(out.strip().splitlines()[-1])
  assert status == 0 and ev["val_images"] == 8
  for k in ("val_dice", "val_loss", "val_accuracy"):
    assert ev[k] == result[k], k
  # a missing input is a one-line error
  status, _, err = _run(capsys, "predict", "--workdir", work, str(tmp_path / "missing.nrrd"),
                        str(tmp_path / "o.nrrd"))
  assert status == 2 and "missing.nrrd" in err
  # a 3-D NRRD whose H, W are not what the model saw: the output keeps its geometry
  vol = (np.random.default_rng(0).random((3, 20, 18)) * 1000).astype(np.int16)
  img = sitk.GetImageFromArray(vol)
  img.SetSpacing((0.7, 0.8, 2.5)); img.SetOrigin((1.0, -2.0, 3.0))
  img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
  sitk.WriteImage(img, str(tmp_path / "vol.nrrd"))
  status, out, _ = _run(capsys, "predict", "--workdir", work, str(tmp_path / "vol.nrrd"),
                        str(tmp_path / "seg.nrrd"), "--json")
  assert status == 0
  seg = sitk.ReadImage(str(tmp_path / "seg.nrrd"))
  assert seg.GetSize() == img.GetSize() and seg.GetSpacing() == img.GetSpacing()
  assert seg.GetOrigin() == img.GetOrigin() and seg.GetDirection() == img.GetDirection()
  labels = sitk.GetArrayFromImage(seg)
  assert set(np.unique(labels)) <= {0, 1}
  # resuming with another model is refused, nothing in the run changes
  before = sorted(p.name for p in (tmp_path / "run").iterdir())
  metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
  status, _, err = _run(capsys, "train", "--workdir", work, "--resume", "--model", "fcn", "--epochs", "3")
  assert status == 2 and "--model" in err and len(err.strip().splitlines()) == 1
  status, _, err = _run(capsys, "train", *TINY, "--workdir", work)
  assert status == 2 and "not empty" in err
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
  assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics
