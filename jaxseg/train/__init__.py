"""Training: config, train state, jitted/pmapped/shard_mapped steps, orbax checkpoints, loop, search.

Names are imported lazily so that `jaxseg.train.config` (used by `--help`)
does not pull in JAX.
"""

from jaxseg.train.config import TrainConfig

_LAZY = {"train_and_evaluate": "jaxseg.train.loop", "restore_run": "jaxseg.train.loop",
         "make_train_step": "jaxseg.train.step", "make_eval_step": "jaxseg.train.step",
         "evaluate": "jaxseg.train.step"}

__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'jaxseg.train' has no attribute {name!r}")
