"""2 processes x 2 CPU devices (jax.distributed on 127.0.0.1) == 1 device.

(One process on N devices against one device is tests/train/test_parallel.py.)

CE + Dice, SGD (a gradient scaled wrongly would show; see test_parallel.py
for the bound). unet_small, with dropout, under pmap, where each process's
devices must take the right rows of the global batch; cnn3 under shard_map
and jit, which place the batch with the same code (a unet_small run costs
~1.5 minutes of CPU per process on a loaded 2-core machine).
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxseg.train import train_and_evaluate
from train_helpers import TINY_DATA, tiny_config

CONFIGS = {model: tiny_config(model=model, loss="ce+dice", optimizer="sgd", lr=0.01, epochs=1)
           for model in ("unet_small", "cnn3")}
KEYS = ("val_dice", "val_loss", "val_accuracy", "train_loss", "train_accuracy", "train_dice")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _in_process(config, devices, parallel, workdir):
  return train_and_evaluate(dataclasses.replace(config, devices=devices, parallel=parallel), workdir,
                            quiet=True)


@pytest.mark.parametrize("parallel,model", [("pmap", "unet_small"), ("shard_map", "cnn3"), ("jit", "cnn3")])
def test_two_processes_match_one_process_and_one_device(tmp_path, parallel, model):
  config = CONFIGS[model]
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  work = str(tmp_path / "multi")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "jaxseg", "train", "--model", model, "--loss", config.loss,
       "--optimizer", config.optimizer, "--lr", str(config.lr), "--data", TINY_DATA, "--epochs", "1",
       "--batch-size", str(config.batch_size), "--parallel", parallel, "--workdir", work, "--json",
       "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=600))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  multi = json.loads(outs[0][0].strip().splitlines()[-1])
  # only process 0 reports (gloo itself prints connection lines on stdout)
  assert not any(l.startswith("{") for l in outs[1][0].splitlines())
  one = _in_process(config, 1, "pmap", str(tmp_path / "one"))
  for k in KEYS:
    np.testing.assert_allclose(multi[k], one[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert multi["steps"] == one["steps"] == 4
  lines = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 1  # written once, by process 0
  assert os.listdir(tmp_path / "multi" / "checkpoints") == ["1"]
