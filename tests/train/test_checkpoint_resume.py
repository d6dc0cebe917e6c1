"""Checkpoints: resume == uninterrupted, determinism, best vs latest, workdir safety."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.train import train_and_evaluate
from jaxseg.train import checkpoint
from train_helpers import numbers, tiny_config


def _history(workdir):
  return checkpoint.Checkpoints(workdir, read_only=True).read_meta()["history"]


def _params(workdir, config):
  from jaxseg.train import state as state_lib
  from jaxseg import data as data_lib
  train, _ = data_lib.train_val(config.data, num_classes=2, seed=config.seed)
  model = state_lib.make_model(config, 1)
  tx = state_lib.make_optimizer(config)
  target = jax.device_get(state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), train.images))
  state, _ = checkpoint.Checkpoints(workdir, read_only=True).restore(target)
  return state


def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
  config = tiny_config(epochs=3, keep=2)
  full = train_and_evaluate(config, str(tmp_path / "full"), quiet=True)
  first = train_and_evaluate(dataclasses.replace(config, epochs=1), str(tmp_path / "part"), quiet=True)
  assert first["epochs"] == 1
  again = train_and_evaluate(config, str(tmp_path / "part"), resume=True, quiet=True)
  for k in ("val_dice", "val_loss", "val_accuracy", "train_loss", "train_dice", "steps"):
    assert again[k] == full[k], k  # bit for bit on the CPU
  assert numbers(_history(tmp_path / "part")) == numbers(_history(tmp_path / "full"))
  a, b = _params(tmp_path / "part", config), _params(tmp_path / "full", config)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # metrics.jsonl has each epoch once, in order; keep=2 left epochs 2 and 3.
  lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
  assert [__import__("json").loads(l)["epoch"] for l in lines] == [1, 2, 3]
  assert sorted(os.listdir(tmp_path / "part" / "checkpoints")) == ["2", "3"]
  assert (tmp_path / "part" / "figures" / "epoch_003.png").exists()


def test_patch_training_with_augmentation_resumes_exactly(tmp_path):
  """Patches drawn from (seed, epoch, case), augmented, validated by sliding windows: one epoch and
  --resume to two ends as two epochs at once. (The 3-D runs take the same path with volumes
  from a disk cache: tests/data/test_preprocess.py checks that cache and its reuse.)"""
  config = tiny_config(epochs=2, patch_size=(16, 16), augment="default", patches_per_case=2)
  full = train_and_evaluate(config, str(tmp_path / "full"), quiet=True)
  train_and_evaluate(dataclasses.replace(config, epochs=1), str(tmp_path / "part"), quiet=True)
  again = train_and_evaluate(config, str(tmp_path / "part"), resume=True, quiet=True)
  assert again["patch_size"] == [16, 16]
  for k in ("val_dice", "val_loss", "val_accuracy", "train_loss", "train_dice", "steps"):
    assert again[k] == full[k], k  # bit for bit on the CPU
  assert numbers(_history(tmp_path / "part")) == numbers(_history(tmp_path / "full"))


def test_best_checkpoint_survives_keep_1(tmp_path):
  config = tiny_config(epochs=3, keep=1)
  train_and_evaluate(config, str(tmp_path), quiet=True)
  hist = _history(tmp_path)
  best_epoch = int(np.argmax([r["val_dice"] for r in hist])) + 1
  ck = checkpoint.Checkpoints(str(tmp_path), read_only=True)
  assert ck.latest_epoch() == 3
  assert ck.latest_epoch("best") == best_epoch
  assert ck.read_meta("best")["best_val_dice"] == max(r["val_dice"] for r in hist)


def _snapshot(path):
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      p = os.path.join(root, f)
      out[p] = (os.path.getsize(p), os.path.getmtime(p))
  return out


def test_refuses_nonempty_workdir_and_resume_of_another_model(tmp_path):
  config = tiny_config(epochs=1)
  train_and_evaluate(config, str(tmp_path), quiet=True)
  before = _snapshot(tmp_path)
  with pytest.raises(ConfigError, match="not empty"):
    train_and_evaluate(config, str(tmp_path), quiet=True)
  with pytest.raises(ConfigError, match="--model 'cnn3', not 'fcn'"):
    train_and_evaluate(dataclasses.replace(config, model="fcn", epochs=2), str(tmp_path),
                       resume=True, quiet=True)
  with pytest.raises(ConfigError, match="--resume: no run"):
    train_and_evaluate(config, str(tmp_path / "nothing"), resume=True, quiet=True)
  assert _snapshot(tmp_path) == before


def test_bad_numbers_are_config_errors_before_the_workdir_exists(tmp_path):
  for bad in (dict(epochs=0), dict(epochs=-3), dict(batch_size=0), dict(lr=-1.0), dict(lr=float("nan")),
              dict(batch_size=6, devices=4), dict(decay_steps=0), dict(optimizer="rmsprop"),
              dict(parallel="vmap")):
    with pytest.raises(ConfigError) as e:
      train_and_evaluate(tiny_config(**bad), str(tmp_path / "w"), quiet=True)
    assert "\n" not in str(e.value) and str(e.value).startswith("--")
  assert not (tmp_path / "w").exists()

