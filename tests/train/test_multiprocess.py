"""2 processes x 2 CPU devices (jax.distributed on 127.0.0.1) == 1 process x 4 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxseg.train import train_and_evaluate
from train_helpers import TINY_DATA, tiny_config


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("parallel", ["pmap"])
def test_two_processes_match_one_process_with_four_devices(tmp_path, parallel):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  work = str(tmp_path / "multi")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "jaxseg", "train", "--model", "cnn3", "--loss", "ce", "--data", TINY_DATA, "--epochs", "1",
       "--batch-size", "4", "--lr", "3e-3", "--parallel", parallel, "--workdir", work, "--json",
       "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=400))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  multi = json.loads(outs[0][0].strip().splitlines()[-1])
  # only process 0 reports (gloo itself prints connection lines on stdout)
  assert not any(l.startswith("{") for l in outs[1][0].splitlines())
  single = train_and_evaluate(tiny_config(epochs=1, batch_size=4, lr=3e-3, devices=4, parallel=parallel),
                              str(tmp_path / "single"), quiet=True)
  for k in ("val_dice", "val_loss", "val_accuracy", "train_loss", "train_accuracy", "train_dice"):
    np.testing.assert_allclose(multi[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert multi["steps"] == single["steps"] == 4
  lines = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 1  # written once, by process 0
  assert os.listdir(tmp_path / "multi" / "checkpoints") == ["1"]
