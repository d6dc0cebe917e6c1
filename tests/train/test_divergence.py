"""A non-finite loss stops the run at once, names the step, keeps the last good checkpoint."""

import dataclasses
import subprocess
import sys

import pytest

from jaxseg import losses
from jaxseg.errors import DivergenceError
from jaxseg.train import evaluate, loop, train_and_evaluate
from train_helpers import TINY_DATA, tiny_config

# A learning rate that really diverges, at a known step: lr * decay_rate ** step = 1e-33 * 1e10 ** k
# is 1e-33, 1e-23, 1e-13, 1e-3 for the 4 updates of epoch 1 (a normal run), and 1e10 ** 4 = 1e40
# overflows float32, so the 5th update (step 5) adds inf to the parameters and step 6's loss is
# not finite. No code is patched: these are TrainConfig values.
EXPLODING_LR = dict(lr=1e-33, decay_rate=1e10, decay_steps=1)


def test_exploding_lr_schedule_is_what_the_test_relies_on():
  from jaxseg.train import state
  schedule = state.make_schedule(tiny_config(**EXPLODING_LR))
  lrs = [float(schedule(k)) for k in range(5)]
  assert lrs[3] == pytest.approx(1e-3, rel=1e-6) and max(lrs[:4]) < 2e-3
  assert lrs[4] == float("inf")


def test_nan_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path):
  config = tiny_config(epochs=1, batch_size=4, **EXPLODING_LR)  # 16 train images -> 4 steps per epoch
  first = train_and_evaluate(config, str(tmp_path), quiet=True)
  with pytest.raises(DivergenceError, match=r"loss is (nan|-?inf) at step 6 \(epoch 2\).*epoch 1"):
    train_and_evaluate(dataclasses.replace(config, epochs=3), str(tmp_path), resume=True, quiet=True)
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
