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
