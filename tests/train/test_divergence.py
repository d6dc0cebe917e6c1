"""A non-finite loss stops the run at once, names the step, keeps the last good checkpoint."""

import dataclasses
import subprocess
import sys

import jax.numpy as jnp
import pytest

from jaxseg import losses
from jaxseg.errors import DivergenceError
from jaxseg.train import evaluate, loop, train_and_evaluate
from train_helpers import TINY_DATA, tiny_config


def test_nan_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  config = tiny_config(epochs=1, batch_size=4)  # 16 train images -> 4 steps per epoch
  first = train_and_evaluate(config, str(tmp_path), quiet=True)
  real_get = losses.get
  monkeypatch.setattr(losses, "get", lambda name: (lambda l, y: real_get(name)(l, y) * jnp.nan))
  with pytest.raises(DivergenceError, match=r"loss is nan at step 5 \(epoch 2\).*epoch 1"):
    train_and_evaluate(dataclasses.replace(config, epochs=3), str(tmp_path), resume=True, quiet=True)
  monkeypatch.setattr(losses, "get", real_get)
  cfg, model, params, meta = loop.restore_run(str(tmp_path))
  assert meta["epoch"] == 1 and len(meta["history"]) == 1
  val = evaluate(model, params, __import__("jaxseg").data.train_val(TINY_DATA)[1], batch_size=4,
                 loss_fn=losses.get("ce"))
  assert val["val_dice"] == first["val_dice"] and val["val_loss"] == first["val_loss"]
  assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def test_cli_lr_1e12_exits_nonzero_naming_the_step(tmp_path):
  r = subprocess.run([sys.executable, "-m", "jaxseg", "train", "--model", "cnn3", "--data", TINY_DATA,
                      "--epochs", "2", "--batch-size", "4", "--lr", "1e12", "--workdir", str(tmp_path / "w")],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 3, r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr
  assert "diverged" in lines[0] and "at step " in lines[0]
