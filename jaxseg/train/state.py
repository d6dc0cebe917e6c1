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


def make_schedule(config, total_steps: int | None = None) -> optax.Schedule:
  """The learning rate per step: a linear warm-up, then ``config.schedule``.

  - ``constant``: lr;
  - ``exponential``: the lab's ``lr * decay_rate ** (t / decay_steps)``
    (continuous, as ``tf.train.exponential_decay`` without staircase);
  - ``poly``: ``lr * (1 - t / T) ** 0.9`` (nnU-Net's);
  - ``cosine``: ``lr * (1 + cos(pi t / T)) / 2``;

  with ``t`` the steps after the warm-up and ``T`` the run's steps after it
  (``total_steps - warmup_steps``). The warm-up rises linearly from 0 to lr
  over ``warmup_steps``: with Adam, the first steps' update sizes do not
  depend on the gradients' scale, and a U-Net's fresh weights take them badly.
  """
  config = config.resolved() if hasattr(config, "resolved") else config
  name = getattr(config, "schedule", None) or "exponential"
  warmup = int(getattr(config, "warmup_steps", None) or 0)
  rest = max(1, int(total_steps or 1) - warmup)
  if name == "constant":
    main = optax.constant_schedule(config.lr)
  elif name == "exponential":
    main = optax.exponential_decay(config.lr, config.decay_steps, config.decay_rate)
  elif name == "poly":
    main = optax.polynomial_schedule(config.lr, 0.0, power=0.9, transition_steps=rest)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(config.lr, decay_steps=rest)
  else:
    raise ConfigError(f"--schedule: unknown schedule {name!r}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), main], [warmup])


def make_optimizer(config, total_steps: int | None = None) -> optax.GradientTransformation:
  """optax Adam or SGD (momentum 0.9) on the learning rate of :func:`make_schedule`.

  ``total_steps`` (the run's) sets the length of the poly and cosine
  schedules; the optimizer state's structure does not depend on it.
  """
  schedule = make_schedule(config, total_steps)
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
