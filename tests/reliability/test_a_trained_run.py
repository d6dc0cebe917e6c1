"""The shared trained run is what the other reliability tests assume.

Collected first (file name), so that under `pytest -n 2` one worker starts
training it at once while the other runs the tests that need no run.
"""

import json

from reliability_helpers import RUN_MODEL


def test_the_shared_run_is_a_finished_one_epoch_run(trained_run):
  config = json.loads((trained_run / "config.json").read_text())
  assert config["model"] == RUN_MODEL and config["epochs"] == 1
  rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1]
  assert (trained_run / "checkpoints" / "1").is_dir() and (trained_run / "best" / "1").is_dir()
