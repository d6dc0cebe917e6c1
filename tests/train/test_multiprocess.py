"""2 processes x 2 CPU devices (jax.distributed on 127.0.0.1) == 1 process x 4 devices == 1 device.

unet_small (dropout on) with CE + Dice, in each data-parallel layout; SGD so
that a gradient scaled wrongly would show (see test_parallel.py for the bound).
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

CONFIG = tiny_config(model="unet_small", loss="ce+dice", optimizer="sgd", lr=0.01, epochs=1)
KEYS = ("val_dice", "val_loss", "val_accuracy", "train_loss", "train_accuracy", "train_dice")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _in_process(devices, parallel, workdir):
  return train_and_evaluate(dataclasses.replace(CONFIG, devices=devices, parallel=parallel), workdir,
                            quiet=True)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  return _in_process(1, "pmap", str(tmp_path_factory.mktemp("one_device")))


@pytest.mark.parametrize("parallel", ["pmap", "shard_map", "jit"])
def test_two_processes_match_one_process_and_one_device(tmp_path, one_device, parallel):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  work = str(tmp_path / "multi")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "jaxseg", "train", "--model", CONFIG.model, "--loss", CONFIG.loss,
       "--optimizer", CONFIG.optimizer, "--lr", str(CONFIG.lr), "--data", TINY_DATA, "--epochs", "1",
       "--batch-size", str(CONFIG.batch_size), "--parallel", parallel, "--workdir", work, "--json",
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
  one = one_device
  for k in KEYS:
    np.testing.assert_allclose(multi[k], one[k], rtol=1e-5, atol=1e-6, err_msg=k)
  if parallel == "pmap":
    four = _in_process(4, "pmap", str(tmp_path / "four"))
    for k in KEYS:
      np.testing.assert_allclose(four[k], one[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert multi["steps"] == one["steps"] == 4
  lines = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 1  # written once, by process 0
  assert os.listdir(tmp_path / "multi" / "checkpoints") == ["1"]
