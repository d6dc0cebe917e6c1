"""`jaxseg search`: grid or random search over the lab's training knobs."""

from __future__ import annotations

HELP = "grid or random search over lr, decay_rate, decay_steps, epochs, batch size, model"

_LISTS = {  # flag -> (field, type)
    "--model": ("model", str), "--loss": ("loss", str), "--optimizer": ("optimizer", str),
    "--lr": ("lr", float), "--decay-rate": ("decay_rate", float), "--decay-steps": ("decay_steps", int),
    "--epochs": ("epochs", int), "--batch-size": ("batch_size", int),
}


def add_arguments(parser):
  for flag, (field, _) in _LISTS.items():
    parser.add_argument(flag, dest=field, default=None,
                        help="comma-separated values to try" + (
                            "; or LO:HI, sampled log-uniformly with --mode random" if field in ("lr", "decay_rate") else ""))
  parser.add_argument("--data", default=None, help="data spec (default: synthetic)")
  parser.add_argument("--val-data", default=None, help="validation data spec")
  parser.add_argument("--mode", choices=("grid", "random"), default="grid", help="grid (default) or random")
  parser.add_argument("--trials", type=int, default=None,
                      help="number of trials (random: required; grid: run only the first N)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the trials and of the random draws")
  parser.add_argument("--workdir", default=None, help="search directory, one trial_NNN per trial "
                                                      "(default: runs/search-<UTC time>)")
  parser.add_argument("--overwrite", action="store_true", help="reuse a non-empty --workdir")
  parser.add_argument("--json", action="store_true", help="print the results as one JSON line on stdout")


def _parse(flag, text, typ):
  from jaxseg.errors import ConfigError
  try:
    if ":" in text and typ is float:
      lo, hi = (float(v) for v in text.split(":"))
      if not 0 < lo < hi:
        raise ValueError
      return ("log", lo, hi)
    values = [typ(v.strip()) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(f"{flag}: cannot read {text!r} (expected comma-separated values"
                      + (" or LO:HI with 0 < LO < HI)" if typ is float else ")")) from None
  if not values:
    raise ConfigError(f"{flag}: no values given")
  return values


def run(args):
  import json
  import os
  import sys
  import time

  from jaxseg.train import search
  from jaxseg.train.config import TrainConfig
  base = TrainConfig(seed=args.seed)
  if args.data:
    base.data = args.data
  base.val_data = args.val_data
  space = {}
  for flag, (field, typ) in _LISTS.items():
    text = getattr(args, field)
    if text is not None:
      space[field] = _parse(flag, text, typ)
  if not space:
    space = {"lr": [1e-3, 3e-4]}
  configs = search.trial_configs(base, space, mode=args.mode, trials=args.trials, seed=args.seed)
  workdir = args.workdir or os.path.join("runs", f"search-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
  log = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
  rows = search.run_search(configs, workdir, overwrite=args.overwrite, log=log)
  best = search.best_config(configs, rows)
  if args.json:
    print(json.dumps({"trials": rows, "best_config": best,
                      "best_val_dice": rows[0]["val_dice"] if best else None, "workdir": workdir},
                     default=str))
  else:
    print(search.format_table(rows))
    print("best configuration: " + (json.dumps({k: best[k] for k in search.SEARCHABLE}) if best else "none"))
  return 0
