"""Parameter search (the lab's last task): grid or random over the training knobs.

Every trial is a full `train_and_evaluate` in its own sub-workdir
(`trial_000`, ...); the results are ranked by the final val Dice.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os

import numpy as np

from jaxseg.errors import ConfigError, DivergenceError
from jaxseg.train.config import TrainConfig

# Knobs a search may vary (TrainConfig field names).
SEARCHABLE = ("lr", "decay_rate", "decay_steps", "epochs", "batch_size", "model", "loss", "optimizer")


def trial_configs(base: TrainConfig, space: dict, *, mode: str = "grid", trials: int | None = None,
                  seed: int = 0) -> list[TrainConfig]:
  """The configs to run.

  `space` maps field -> list of values, or for lr/decay_rate a ("log", lo, hi)
  range, sampled log-uniformly (random mode only). Grid mode runs the whole
  product (or its first `trials`); random mode draws `trials` configs.
  """
  for name in space:
    if name not in SEARCHABLE:
      raise ConfigError(f"cannot search over {name!r} (choose from {', '.join(SEARCHABLE)})")
  if mode == "grid":
    for name, values in space.items():
      if isinstance(values, tuple) and values and values[0] == "log":
        raise ConfigError(f"--{name.replace('_', '-')}: a range LO:HI needs --mode random")
    names = list(space)
    combos = [dict(zip(names, vals)) for vals in itertools.product(*(space[n] for n in names))]
    if trials is not None:
      combos = combos[:trials]
  elif mode == "random":
    if not trials or trials < 1:
      raise ConfigError("--trials: random search needs --trials N >= 1")
    rng = np.random.default_rng(seed)
    combos = []
    for _ in range(trials):
      combo = {}
      for name, values in space.items():
        if isinstance(values, tuple) and values and values[0] == "log":
          _, lo, hi = values
          combo[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        else:
          combo[name] = values[int(rng.integers(len(values)))]
      combos.append(combo)
  else:
    raise ConfigError(f"--mode: expected grid or random, got {mode!r}")
  configs = [dataclasses.replace(base, **c).validate() for c in combos]
  if not configs:
    raise ConfigError("the search space is empty")
  return configs


def run_search(configs: list[TrainConfig], workdir: str, *, overwrite: bool = False,
               quiet: bool = False, log=None) -> list[dict]:
  """Trains every config in `workdir/trial_NNN`; returns rows sorted by val Dice (best first)."""
  from jaxseg.train.loop import train_and_evaluate
  if os.path.isdir(workdir) and os.listdir(workdir) and not overwrite:
    raise ConfigError(f"--workdir: {workdir} is not empty; use --overwrite or another --workdir")
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for i, config in enumerate(configs):
    sub = os.path.join(workdir, f"trial_{i:03d}")
    knobs = {k: getattr(config, k) for k in SEARCHABLE}
    try:
      result = train_and_evaluate(config, sub, overwrite=overwrite, quiet=True)
      row = {"trial": i, **knobs, "val_dice": result["val_dice"], "val_loss": result["val_loss"],
             "val_accuracy": result["val_accuracy"], "best_val_dice": result["best_val_dice"],
             "status": "ok", "workdir": sub}
    except DivergenceError as e:
      row = {"trial": i, **knobs, "val_dice": float("nan"), "val_loss": float("nan"),
             "val_accuracy": float("nan"), "best_val_dice": float("nan"), "status": "diverged",
             "workdir": sub, "error": str(e)}
    rows.append(row)
    if log:
      log(f"trial {i + 1}/{len(configs)}: " + "  ".join(f"{k}={v}" for k, v in knobs.items())
          + f"  -> val_dice {row['val_dice']:.4f} ({row['status']})")
  rows.sort(key=lambda r: (-r["val_dice"] if math.isfinite(r["val_dice"]) else math.inf, r["trial"]))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"trials": rows, "best_config": best_config(configs, rows)}, f, indent=1, default=str)
  return rows


def best_config(configs: list[TrainConfig], rows: list[dict]) -> dict | None:
  ok = [r for r in rows if r["status"] == "ok"]
  return configs[ok[0]["trial"]].to_dict() if ok else None


def format_table(rows: list[dict]) -> str:
  cols = ("trial", "model", "loss", "lr", "decay_rate", "decay_steps", "epochs", "batch_size",
          "val_dice", "val_loss", "val_accuracy", "status")
  def cell(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)
  table = [cols] + [tuple(cell(r[c]) for c in cols) for r in rows]
  widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
  return "\n".join("  ".join(v.rjust(w) for v, w in zip(t, widths)) for t in table)
