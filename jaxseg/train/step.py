"""Jitted train and eval steps: one device, `jax.pmap`, `jax.shard_map` and `jax.jit` over a mesh.

Every layout computes the one-device update of the global batch:

- the loss and the train metrics are those of the global batch: in pmap and
  shard_map, where each device sees its slice, they are called with
  ``axis_name`` and sum their numerators and denominators over the devices
  before dividing (`jaxseg._global`); under jit the arrays are the global
  batch and XLA's partitioner splits the sums;
- dropout masks come from (seed, step, the example's row in the global
  batch): the key is the same on every device and `layers.global_rows`
  tells the model where its slice starts.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxseg.models import layers
from jaxseg.train.state import TrainState

AXIS = "data"
LAYOUTS = ("pmap", "shard_map", "jit")


def center_crop_labels(logits, labels):
  """Labels cut to the logits' spatial size, centred (the valid-padding U-Net's
  output is smaller than its input: 572 -> 388); unchanged when sizes match."""
  out, full = logits.shape[1:-1], labels.shape[1:]
  if out == full:
    return labels
  starts = [(f - o) // 2 for f, o in zip(full, out)]
  return labels[(slice(None),) + tuple(slice(s, s + o) for s, o in zip(starts, out))]


def _step_fn(model, loss_fn, tx, layout="single"):
  """(state, images, labels, rng) -> (state, metrics); pure, not yet jitted.

  `layout` "single" and "jit" see the global batch; "pmap" and "shard_map"
  see one device's slice inside a map over the axis `AXIS`.
  """
  from jaxseg import metrics as metrics_lib
  mapped = layout in ("pmap", "shard_map")
  reduce = {"axis_name": AXIS} if mapped else {}

  def step(state: TrainState, images, labels, rng):
    key = jax.random.fold_in(rng, state.step)
    first_row = lax.axis_index(AXIS) * images.shape[0] if mapped else 0

    def loss_of(params):
      with layers.global_rows(first_row):
        logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
      return loss_fn(logits, center_crop_labels(logits, labels), **reduce), logits

    (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    if mapped:
      # Each device differentiated the same global loss (psum inside). The transpose
      # of psum is a psum of the devices' cotangents (pmap; shard_map without vma
      # checks), so each device's gradient is N times its own share, and their mean
      # is the sum of the shares: the one-device gradient.
      grads = lax.pmean(grads, AXIS)
    labels = center_crop_labels(logits, labels)
    metrics = {"loss": loss, "accuracy": metrics_lib.pixel_accuracy(logits, labels, **reduce),
               "dice": metrics_lib.dice_coef(logits, labels, **reduce)}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


class Stepper:
  """Runs the train step in one of four layouts and moves state in and out.

  mode "single": `jax.jit` on one device. "pmap": the state is replicated
  with a leading device axis and each device gets `batch / devices` images.
  "shard_map": one `jax.jit(jax.shard_map(...))` over a 1-D mesh ("data",),
  state replicated, batch sharded on its first axis. "jit": `jax.jit` of the
  one-device step on global arrays with the same shardings (state replicated,
  batch sharded on "data"), traced and run with the mesh set; XLA's SPMD
  partitioner places the collectives. In a multi-process run, each process passes only its own slice of the
  global batch (`local_slice`) and the collectives span every process.
  """

  def __init__(self, model, loss_fn, tx, *, devices: int = 1, mode: str = "pmap"):
    from jaxseg.errors import ConfigError
    if mode not in LAYOUTS:
      raise ConfigError(f"--parallel: unknown layout {mode!r} (choose from {', '.join(LAYOUTS)})")
    self.num_devices = devices
    self.mode = "single" if devices == 1 and jax.process_count() == 1 else mode
    all_devices = jax.devices()
    if devices > len(all_devices):
      raise ConfigError(f"--devices: {devices} requested but only {len(all_devices)} available")
    if jax.process_count() > 1 and devices != len(all_devices):
      raise ConfigError(f"--devices: a multi-process run uses every device ({len(all_devices)}), got {devices}")
    self.devices = all_devices[:devices]
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    step = _step_fn(model, loss_fn, tx, self.mode)
    if self.mode == "single":
      self._step = jax.jit(step, donate_argnums=0)
    elif self.mode == "pmap":
      self._step = jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, 0, None), donate_argnums=0,
                            devices=self.devices if jax.process_count() == 1 else None)
    else:
      # Auto: the shardings are hints for XLA's partitioner, not part of the traced
      # types (JAX's default, Explicit, would ask every custom VJP in the model
      # for sharding-typed cotangents).
      self.mesh = jax.make_mesh((devices,), (AXIS,), (jax.sharding.AxisType.Auto,),
                                devices=self.devices)
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))
      if self.mode == "shard_map":
        # check_vma=False: Pallas calls (conv_impl="pallas", the fused loss) cannot
        # declare how their outputs vary over the axis; it also gives psum the
        # transpose that the gradient rule in _step_fn assumes, as under pmap.
        step = jax.shard_map(step, mesh=self.mesh, in_specs=(P(), P(AXIS), P(AXIS), P()),
                             out_specs=(P(), P()), check_vma=False)
      self._step = jax.jit(step, donate_argnums=0,
                           in_shardings=(self._replicated, self._sharded, self._sharded, self._replicated),
                           out_shardings=(self._replicated, self._replicated))

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

  def _device_args(self, state, images, labels, rng):
    """This process's slice of the batch (and the rng) laid out for this mode's step."""
    if self.mode == "single":
      return state, images, labels, rng
    if self.mode == "pmap":
      n = len(self.local_devices)
      shape = lambda a: a.reshape((n, a.shape[0] // n) + a.shape[1:])
      return state, shape(images), shape(labels), rng
    put = lambda a: jax.make_array_from_process_local_data(self._sharded, np.asarray(a))
    rng = jax.make_array_from_process_local_data(self._replicated, np.asarray(rng))
    return state, put(images), put(labels), rng

  def _mesh_context(self):
    """jit: the mesh set while tracing and running, so that `jaxseg.ops` runs its C++
    custom calls per batch shard (`ops.sharding.per_batch_shard`) instead of letting
    XLA's partitioner gather the whole batch around them."""
    return jax.set_mesh(self.mesh) if self.mode == "jit" else contextlib.nullcontext()

  def __call__(self, state, images, labels, rng):
    """One step on this process's slice of the global batch -> (state, metrics on host)."""
    with self._mesh_context():
      state, metrics = self._step(*self._device_args(state, images, labels, rng))
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda m: m[0], metrics)
    elif self.mode != "single":
      metrics = jax.tree.map(lambda m: m.addressable_shards[0].data, metrics)
    return state, metrics

  def lower(self, state, images, labels, rng):
    """The step lowered for these arguments (``.compile().as_text()`` shows the
    collectives XLA placed); compiling it fills the cache that the call uses."""
    with self._mesh_context():
      return self._step.lower(*self._device_args(state, images, labels, rng))


def make_train_step(model, loss_fn, tx, *, devices: int = 1, mode: str = "pmap") -> Stepper:
  """The train step `(state, images, labels, rng) -> (state, metrics)` for `devices` devices.

  `loss_fn(logits, labels)` must also take ``axis_name=`` for the pmap and
  shard_map layouts (every loss of `jaxseg.losses` does).
  """
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
