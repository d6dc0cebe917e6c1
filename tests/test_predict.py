"""`jaxseg predict` by sliding windows: 3-D models on whole volumes, any size, the input's geometry.

A run is written here with the checkpoint API and fixed weights (no training,
so the expected output is known); its predictions are checked against
`jaxseg.inference.sliding_window` on the same model, normalised by hand.
tests/train/test_train_3d.py trains a 3-D run through the command and predicts with it.
"""

import json

import jax
import numpy as np
import pytest
import SimpleITK as sitk

from jaxseg import cli, models
from jaxseg.inference import sliding_window
from jaxseg.train import TrainConfig
from jaxseg.train import checkpoint, state as state_lib


def _run(capsys, *argv):
  status = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  return status, out.out, out.err


def _write_run(workdir, model_name, image_shape, *, normalization, seed=0):
  config = TrainConfig(model=model_name, data="synthetic", epochs=1, batch_size=1)
  model = models.create(model_name)
  tx = state_lib.make_optimizer(config)
  # He-scaled NumPy weights in the model's tree: no jitted init to compile.
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *image_shape), np.float32))["params"]
  scale = lambda shape: np.sqrt(2 / np.prod(shape[:-1])) if len(shape) > 1 else 0.1
  params = jax.tree.map(lambda a: rng.normal(0, scale(a.shape), a.shape).astype(np.float32), shapes)
  # The head's bias at the median logit difference on noise: both classes are predicted.
  head = params["head" if "head" in params else "conv3"]
  noise = rng.normal(size=(1, *image_shape)).astype(np.float32)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, noise))
  head["bias"] = np.asarray([0.0, -np.median(logits[..., 1] - logits[..., 0])], np.float32)
  state = state_lib.TrainState(step=np.zeros((), np.int32), params=params,
                               opt_state=jax.device_get(tx.init(params)))
  meta = {"image_shape": list(image_shape), "in_channels": 1, "num_train": 1, "num_val": 1,
          "normalization": {"scheme": normalization}, "epoch": 1, "config": config.to_dict(), "history": [],
          "best_val_dice": 0.5, "best_epoch": 1, "rng": [0, 0]}
  ckpts = checkpoint.Checkpoints(str(workdir))
  ckpts.save(1, state, meta, is_best=True)
  ckpts.close()
  return model, state.params


def _volume(path, shape, *, spacing, origin, direction, seed=0):
  vol = np.random.default_rng(seed).normal(100, 30, size=shape).astype(np.float32)
  vol[:, shape[1] // 3: 2 * shape[1] // 3, 2:9] += 150  # a bright block: some structure
  img = sitk.GetImageFromArray(vol)
  img.SetSpacing(spacing)
  img.SetOrigin(origin)
  img.SetDirection(direction)
  sitk.WriteImage(img, str(path))
  return vol, img


ROTATED = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)  # a 90-degree rotation about y


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
  work = tmp_path_factory.mktemp("run3d")
  model, params = _write_run(work, "unet3d_small", (8, 16, 16, 1), normalization="zscore-volume")
  return work, model, params


def test_3d_model_segments_an_odd_sized_rotated_volume_whole(run3d, tmp_path, capsys):
  work, model, params = run3d
  vol, img = _volume(tmp_path / "v.nrrd", (11, 19, 23), spacing=(1.1, 1.1, 2.5),
                     origin=(4.0, -3.0, 7.5), direction=ROTATED)
  status, out, err = _run(capsys, "predict", "--workdir", work, tmp_path / "v.nrrd",
                          tmp_path / "seg.nii.gz", "--json", "--overlap", "0.25", "--batch-size", "3")
  assert status == 0, err
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["window"] == [8, 16, 16] and summary["volumes"] == 1
  seg = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
  assert seg.GetSize() == img.GetSize()
  np.testing.assert_allclose(seg.GetSpacing(), img.GetSpacing(), rtol=1e-6)
  np.testing.assert_allclose(seg.GetOrigin(), img.GetOrigin(), atol=1e-5)
  np.testing.assert_allclose(seg.GetDirection(), img.GetDirection(), atol=1e-6)
  # The same as sliding windows over the volume z-scored as one case.
  x = ((vol - vol.mean()) / vol.std())[None, ..., None]
  apply = jax.jit(lambda w: model.apply({"params": params}, w))
  probs = sliding_window(apply, x, window=(8, 16, 16), overlap=0.25)
  expected = probs.argmax(-1)[0]
  got = sitk.GetArrayFromImage(seg)
  assert 0 < expected.mean() < 1, "the toy weights should predict both classes"
  assert (got == expected).mean() > 0.999  # the argmax may flip where the classes tie
  assert summary["foreground_pixels"] == int(got.sum())


def test_3d_model_refuses_a_2d_image_in_one_line(run3d, tmp_path, capsys):
  work, _, _ = run3d
  sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.float32)), str(tmp_path / "a.nrrd"))
  status, _, err = _run(capsys, "predict", "--workdir", work, tmp_path / "a.nrrd", tmp_path / "o.nrrd")
  assert status == 2 and len(err.strip().splitlines()) == 1 and "3-D model" in err, err
  assert not (tmp_path / "o.nrrd").exists()


@pytest.mark.parametrize("overlap", ["1", "-0.1"])
def test_overlap_outside_0_1_is_a_one_line_error(run3d, tmp_path, capsys, overlap):
  work, _, _ = run3d
  status, _, err = _run(capsys, "predict", "--workdir", work, tmp_path / "x.nrrd", tmp_path / "o.nrrd",
                        "--overlap", overlap)
  assert status == 2 and "--overlap" in err and len(err.strip().splitlines()) == 1


def test_2d_model_segments_a_volume_slice_by_slice_with_the_training_window(tmp_path, capsys):
  work = tmp_path / "run2d"
  model, params = _write_run(work, "cnn3", (12, 12, 1), normalization="zscore-slice")
  vol, img = _volume(tmp_path / "v.mha", (3, 21, 17), spacing=(0.7, 0.8, 3.0),
                     origin=(1.0, 2.0, 3.0), direction=ROTATED)
  status, out, err = _run(capsys, "predict", "--workdir", work, tmp_path / "v.mha",
                          tmp_path / "seg.mha", "--json", "--mirror")
  assert status == 0, err
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["window"] == [12, 12] and summary["slices"] == 3 and summary["mirror"]
  seg = sitk.ReadImage(str(tmp_path / "seg.mha"))
  assert seg.GetSize() == img.GetSize() and seg.GetDirection() == img.GetDirection()
  # each slice z-scored on its own (the run's "zscore-slice"), windows per slice, all flips
  m = vol.mean(axis=(1, 2), keepdims=True)
  s = vol.std(axis=(1, 2), keepdims=True)
  x = ((vol - m) / s)[..., None]
  apply = jax.jit(lambda w: model.apply({"params": params}, w))
  expected = sliding_window(apply, x, window=(12, 12), mirror_axes=(0, 1)).argmax(-1)
  got = sitk.GetArrayFromImage(seg)
  assert (got == expected).mean() > 0.999
