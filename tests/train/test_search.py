"""`jaxseg search`: trial configs (grid, random) and a tiny two-trial search through the CLI."""

import json

import pytest

from jaxseg import cli
from jaxseg.errors import ConfigError
from jaxseg.train import TrainConfig, search
from train_helpers import TINY_DATA


def test_grid_is_the_full_product_and_random_draws_within_ranges():
  base = TrainConfig(model="cnn3", data=TINY_DATA)
  grid = search.trial_configs(base, {"lr": [1e-3, 1e-2], "batch_size": [2, 4, 8]}, mode="grid")
  assert [(c.lr, c.batch_size) for c in grid] == [(1e-3, 2), (1e-3, 4), (1e-3, 8), (1e-2, 2), (1e-2, 4), (1e-2, 8)]
  rnd = search.trial_configs(base, {"lr": ("log", 1e-4, 1e-2), "epochs": [1, 2]}, mode="random",
                             trials=20, seed=1)
  assert len(rnd) == 20 and all(1e-4 <= c.lr <= 1e-2 for c in rnd)
  assert {c.epochs for c in rnd} == {1, 2}
  again = search.trial_configs(base, {"lr": ("log", 1e-4, 1e-2), "epochs": [1, 2]}, mode="random",
                               trials=20, seed=1)
  assert [c.lr for c in again] == [c.lr for c in rnd]
  with pytest.raises(ConfigError, match="--lr"):
    search.trial_configs(base, {"lr": [-1.0]}, mode="grid")
  with pytest.raises(ConfigError, match="--mode random"):
    search.trial_configs(base, {"lr": ("log", 1e-4, 1e-2)}, mode="grid")


def test_search_cli_ranks_trials_by_val_dice(tmp_path, capsys):
  status = cli.main(["search", "--model", "cnn3", "--data", TINY_DATA, "--lr", "1e-3,3e-2",
                     "--batch-size", "4", "--epochs", "1", "--workdir", str(tmp_path), "--json"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert status == 0
  dice = [t["val_dice"] for t in out["trials"]]
  assert len(dice) == 2 and dice == sorted(dice, reverse=True)
  assert out["best_config"]["lr"] == out["trials"][0]["lr"] and out["best_val_dice"] == dice[0]
  for t in out["trials"]:
    hist = [json.loads(l) for l in open(f"{t['workdir']}/metrics.jsonl")]
    assert hist[-1]["val_dice"] == t["val_dice"]
  status = cli.main(["search", "--lr", "abc", "--workdir", str(tmp_path / "x")])
  err = capsys.readouterr().err
  assert status == 2 and "--lr" in err and len(err.strip().splitlines()) == 1
