"""Sums over the global batch, so a loss or metric gives the same value on 1 device or N.

A loss that is not a plain per-pixel mean (soft Dice, class-weighted CE, the
per-image hard Dice) cannot be averaged across devices after the fact: the
mean of per-device Dice values is not the Dice of the batch. Losses and
metrics therefore take ``axis_name``: inside `jax.pmap` or `jax.shard_map`
over that axis they sum their numerators and denominators over the devices
with `lax.psum` before the one final division. With ``axis_name=None`` (one
device, or `jax.jit` over globally sharded arrays, where the arrays already
are the global batch) the sums are local and nothing else changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def global_sum(x, axis_name=None):
  """``x`` (any pytree) summed over the devices of the mapped axis ``axis_name``; ``x`` for None."""
  return x if axis_name is None else lax.psum(x, axis_name)


def global_mean(values: jax.Array, axis_name=None) -> jax.Array:
  """Mean of every element of ``values`` over the global batch.

  The local sum and element count are summed over the devices before the
  division, so shards of different sizes are weighted by their size.
  """
  if axis_name is None:
    return jnp.mean(values)
  total, count = lax.psum((jnp.sum(values), jnp.asarray(values.size, values.dtype)), axis_name)
  return total / count
