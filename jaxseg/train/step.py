"""Jitted train and eval steps: one device, `jax.pmap`, and `jax.shard_map`.

All three compute the same update from the same global batch: the loss is
the mean over the local batch, and the data-parallel variants average the
gradients (and metrics) over the "data" axis, i.e. over the global batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxseg.train.state import TrainState

AXIS = "data"


def center_crop_labels(logits, labels):
  """Labels cut to the logits' spatial size, centred (the valid-padding U-Net's
  output is smaller than its input: 572 -> 388); unchanged when sizes match."""
  out, full = logits.shape[1:-1], labels.shape[1:]
  if out == full:
    return labels
  starts = [(f - o) // 2 for f, o in zip(full, out)]
  return labels[(slice(None),) + tuple(slice(s, s + o) for s, o in zip(starts, out))]


def _step_fn(model, loss_fn, tx, axis_name=None):
  """(state, images, labels, rng) -> (state, metrics); pure, not yet jitted."""
  from jaxseg import metrics as metrics_lib

  def step(state: TrainState, images, labels, rng):
    key = jax.random.fold_in(rng, state.step)
    if axis_name is not None:  # different dropout masks on each device
      key = jax.random.fold_in(key, lax.axis_index(axis_name))

    def loss_of(params):
      logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
      return loss_fn(logits, center_crop_labels(logits, labels)), logits

    (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    labels = center_crop_labels(logits, labels)
    metrics = {"loss": loss, "accuracy": metrics_lib.pixel_accuracy(logits, labels),
               "dice": metrics_lib.dice_coef(logits, labels)}
    if axis_name is not None:
      grads = lax.pmean(grads, axis_name)
      metrics = lax.pmean(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


class Stepper:
  """Runs the train step in one of three layouts and moves state in and out.

  mode "single": `jax.jit` on one device. mode "pmap": the state is
  replicated with a leading device axis and each device gets
  `batch / devices` images. mode "shard_map": one `jax.jit(jax.shard_map(...))`
  over a 1-D mesh ("data",), state replicated, batch sharded on its first axis.
  In a multi-process run, each process passes only its own slice of the
  global batch (`local_slice`) and the collectives span every process.
  """

  def __init__(self, model, loss_fn, tx, *, devices: int = 1, mode: str = "pmap"):
    self.num_devices = devices
    self.mode = "single" if devices == 1 and jax.process_count() == 1 else mode
    all_devices = jax.devices()
    if devices > len(all_devices):
      from jaxseg.errors import ConfigError
      raise ConfigError(f"--devices: {devices} requested but only {len(all_devices)} available")
    if jax.process_count() > 1 and devices != len(all_devices):
      from jaxseg.errors import ConfigError
      raise ConfigError(f"--devices: a multi-process run uses every device ({len(all_devices)}), got {devices}")
    self.devices = all_devices[:devices]
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    if self.mode == "single":
      self._step = jax.jit(_step_fn(model, loss_fn, tx), donate_argnums=0)
    elif self.mode == "pmap":
      self._step = jax.pmap(_step_fn(model, loss_fn, tx, AXIS), axis_name=AXIS,
                            in_axes=(0, 0, 0, None), donate_argnums=0,
                            devices=self.devices if jax.process_count() == 1 else None)
    else:
      self.mesh = jax.make_mesh((devices,), (AXIS,), devices=self.devices)
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))
      body = jax.shard_map(_step_fn(model, loss_fn, tx, AXIS), mesh=self.mesh,
                           in_specs=(P(), P(AXIS), P(AXIS), P()), out_specs=(P(), P()))
      self._step = jax.jit(body, donate_argnums=0)

  def local_slice(self, global_batch_size: int) -> slice:
    """The rows of each global batch that this process loads."""
    per_process = global_batch_size // jax.process_count()
    i = jax.process_index()
    return slice(i * per_process, (i + 1) * per_process)

  def put_state(self, state):
    """Host (numpy) state -> the device layout of this mode."""
    if self.mode == "single":
      return jax.device_put(state, self.devices[0])
    if self.mode == "pmap":
      n = len(self.local_devices)

      def replicate(x):
        x = np.broadcast_to(np.asarray(x), (n,) + np.shape(x))
        # the drop-in for the deprecated jax.device_put_replicated
        sharding = NamedSharding(jax.sharding.Mesh(np.array(self.local_devices), (AXIS,)), P(AXIS))
        return jax.device_put(x, sharding)

      return jax.tree.map(replicate, state)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._replicated, np.asarray(x)), state)

  def get_state(self, state):
    """Device state -> host numpy pytree (identical on every device)."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data[0]), state)
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state)

  def __call__(self, state, images, labels, rng):
    """One step on this process's slice of the global batch -> (state, metrics on host)."""
    if self.mode == "single":
      state, metrics = self._step(state, images, labels, rng)
    elif self.mode == "pmap":
      n = len(self.local_devices)
      shape = lambda a: a.reshape((n, a.shape[0] // n) + a.shape[1:])
      state, metrics = self._step(state, shape(images), shape(labels), rng)
      metrics = jax.tree.map(lambda m: m[0], metrics)
    else:
      put = lambda a: jax.make_array_from_process_local_data(self._sharded, a)
      rng = jax.make_array_from_process_local_data(self._replicated, np.asarray(rng))
      state, metrics = self._step(state, put(images), put(labels), rng)
      metrics = jax.tree.map(lambda m: m.addressable_shards[0].data, metrics)
    return state, metrics


def make_train_step(model, loss_fn, tx, *, devices: int = 1, mode: str = "pmap") -> Stepper:
  """The train step `(state, images, labels, rng) -> (state, metrics)` for `devices` devices."""
  return Stepper(model, loss_fn, tx, devices=devices, mode=mode)


def make_eval_step(model, loss_fn):
  """Jitted (params, images, labels) -> per-batch sums of loss, accuracy and Dice.

  Sums (mean times batch size) so that a smaller last batch is weighted
  correctly: the val metrics are means over every val image.
  """
  from jaxseg import metrics as metrics_lib

  @jax.jit
  def eval_step(params, images, labels):
    logits = model.apply({"params": params}, images, train=False)
    labels = center_crop_labels(logits, labels)
    n = images.shape[0]
    return {"loss": loss_fn(logits, labels) * n,
            "accuracy": metrics_lib.pixel_accuracy(logits, labels) * n,
            "dice": metrics_lib.dice_coef(logits, labels) * n,
            "dice_per_class": metrics_lib.dice_coef_per_class(logits, labels) * n}, logits

  return eval_step


def evaluate(model, params, dataset, *, batch_size: int, loss_fn, eval_step=None) -> dict:
  """Mean val loss, pixel accuracy and (the lab's hard) Dice over every image of `dataset`.

  ``val_dice_per_class`` maps each foreground class (its index as a string)
  to its Dice; ``val_dice`` is their mean (with two classes, class 1's).
  """
  from jaxseg import data as data_lib
  eval_step = eval_step or make_eval_step(model, loss_fn)
  totals = {"loss": 0.0, "accuracy": 0.0, "dice": 0.0}
  per_class = 0.0
  count = 0
  for images, labels in data_lib.batches(dataset, batch_size, seed=0, epoch=0, shuffle=False,
                                         augment=False, drop_remainder=False):
    sums, _ = eval_step(params, jnp.asarray(images), jnp.asarray(labels))
    for k in totals:
      totals[k] += float(sums[k])
    per_class = per_class + np.asarray(sums["dice_per_class"], np.float64)
    count += len(images)
  out = {f"val_{k}": v / max(count, 1) for k, v in totals.items()} | {"val_images": count}
  per_class = np.atleast_1d(per_class) / max(count, 1)
  out["val_dice_per_class"] = {str(c): float(d) for c, d in enumerate(per_class, start=1)}
  if len(per_class) > 1:  # with one foreground class val_dice stays the lab's dice_coef
    out["val_dice"] = float(np.mean(per_class))
  return out
