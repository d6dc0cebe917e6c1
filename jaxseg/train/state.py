"""Train state, optimizer and model construction from a `TrainConfig`."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxseg.errors import ConfigError


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a plain pytree (no functions)."""
  step: jax.Array
  params: Any
  opt_state: Any


def make_schedule(config) -> optax.Schedule:
  """The lab's learning rate: lr * decay_rate ** (step / decay_steps)."""
  return optax.exponential_decay(config.lr, config.decay_steps, config.decay_rate)


def make_optimizer(config) -> optax.GradientTransformation:
  """optax Adam or SGD with the lab's exponential decay of the learning rate.

  lr(step) = lr * decay_rate ** (step / decay_steps)  (continuous, as in
  `tf.train.exponential_decay` without staircase); decay_rate 1.0 is no decay.
  """
  schedule = make_schedule(config)
  if config.optimizer == "adam":
    return optax.adam(schedule)
  if config.optimizer == "sgd":
    return optax.sgd(schedule, momentum=0.9)
  raise ConfigError(f"--optimizer: unknown optimizer {config.optimizer!r}")


def make_model(config, in_channels: int = 1):
  from jaxseg import models
  return models.create(config.model, num_classes=config.num_classes, in_channels=in_channels,
                       conv_impl=config.conv_impl)


def create_train_state(model, tx, rng, sample_images) -> TrainState:
  """Initialises the params on `sample_images` (N, *spatial, C); step 0."""
  # One compiled init instead of dozens of op-by-op compiles.
  variables = jax.jit(model.init)(rng, jnp.asarray(sample_images[:1]))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
