"""Shared bits of the training tests: a tiny run configuration."""

import dataclasses

from jaxseg.train import TrainConfig

TINY_DATA = "synthetic:16,8,32"
# Fields of a metrics row that depend on wall-clock time, not on the numbers.
TIMING = ("epoch_seconds", "train_seconds", "data_wait_seconds")


def tiny_config(**kw) -> TrainConfig:
  base = TrainConfig(model="cnn3", data=TINY_DATA, epochs=2, batch_size=4, lr=3e-3, seed=0, loss="ce")
  return dataclasses.replace(base, **kw)


def numbers(history):
  """The metric rows without the timing fields."""
  return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def finished_checkpoints(workdir) -> list[str]:
  """The epochs whose checkpoint is complete (orbax renames one to its final name only when it is)."""
  import os
  d = os.path.join(workdir, "checkpoints")
  return [n for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []


def sigkill_after_first_checkpoint(args, workdir, *, timeout: float = 400) -> int:
  """Runs `jaxseg train *args --workdir workdir` and SIGKILLs it once a checkpoint is complete.

  Returns the process's exit status (-SIGKILL if it was killed while running).
  """
  import os
  import signal
  import subprocess
  import sys
  import time
  p = subprocess.Popen([sys.executable, "-m", "jaxseg", "train", *args, "--workdir", str(workdir)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + timeout
    while not finished_checkpoints(workdir) and p.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
  finally:
    if p.poll() is None:
      p.kill()
  return p.returncode
