"""SIGKILL a real `jaxseg train` after its first checkpoint; --resume ends like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

from jaxseg.train import train_and_evaluate
from train_helpers import TINY_DATA, finished_checkpoints, sigkill_after_first_checkpoint, tiny_config

ARGS = ["--model", "cnn3", "--loss", "ce", "--data", TINY_DATA, "--epochs", "3", "--batch-size", "4", "--lr", "3e-3",
        "--json", "--quiet"]


def _train(workdir, *extra):
  r = subprocess.run([sys.executable, "-m", "jaxseg", "train", *ARGS, "--workdir", workdir, *extra],
                     capture_output=True, text=True, timeout=400)
  assert r.returncode == 0, r.stderr[-2000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
  killed = str(tmp_path / "killed")
  assert sigkill_after_first_checkpoint(ARGS, killed) == -signal.SIGKILL
  done = sorted(int(e) for e in finished_checkpoints(killed))
  assert done and done[-1] < 3
  resumed = _train(killed, "--resume")
  # the uninterrupted reference in this process (same config as ARGS)
  full = train_and_evaluate(tiny_config(epochs=3, batch_size=4, lr=3e-3), str(tmp_path / "full"), quiet=True)
  for k in ("val_dice", "val_loss", "val_accuracy", "train_loss", "train_accuracy", "train_dice", "steps"):
    assert resumed[k] == full[k], k  # exactly, bit for bit
  rows = [json.loads(l) for l in open(os.path.join(killed, "metrics.jsonl"))]
  ref = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
  strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}
  assert [strip(r) for r in rows] == [strip(r) for r in ref]
