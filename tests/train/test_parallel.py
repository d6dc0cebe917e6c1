"""Data parallelism == one device: every loss, cnn3 and unet_small (dropout on), pmap / shard_map / jit.

The bound. A data-parallel step computes the same sums as one device, but a
sum over the batch (a loss's numerator, a weight gradient's sum over images
and pixels) is split into per-device partial sums added in another order.
In float32 that moves each sum by a few ulps of its partial sums (~1e-7
relative), and so each gradient by ~1e-7 of its terms' scale. The tests use
SGD with momentum 0.9 (lr 0.1 for cnn3, 0.01 for unet_small, whose summed
losses have larger gradients), where 3 steps move a parameter by
lr * (2.71 g1 + 1.9 g2 + g3): the rounding then reaches the parameters
(scale <= ~1) at ~1e-7, as observed (max 1.2e-7, 2 ulps at 0.5). We allow
atol 1e-6 (16 ulps at 0.5). The bugs these tests are for move parameters by
1e-4 to 1e-1 (a per-device Dice, a dropout mask per device, a gradient N
times too large). SGD rather than Adam: Adam divides by |g|, so it hides a
gradient N times too large, and it turns the rounding of near-zero gradients
into steps of up to ~0.1 lr (experiments/RESULTS.md).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxseg import losses, metrics, models
from jaxseg import _reference_losses as ref
from jaxseg.models import layers
from jaxseg.train import make_train_step
from jaxseg.train import state as state_lib

PARAM_ATOL = 1e-6
METRIC_RTOL = 1e-6
LAYOUTS = [(layout, n) for layout in ("pmap", "shard_map", "jit") for n in (2, 4)]
CLASS_WEIGHTS = np.array([1.0, 10.0], np.float32)
# Every loss of --loss, and the class-weighted CE of the library.
LOSS_FNS = {name: losses.get(name) for name in losses.LOSSES}
LOSS_FNS["ce_weighted"] = losses.get("ce", class_weights=CLASS_WEIGHTS)


def every_loss(logits, labels, *, axis_name=None):
  """The sum of every loss: one compiled U-Net step checks each one's global reduction
  (a wrong term moves the sum's gradient by its own error)."""
  return sum(fn(logits, labels, axis_name=axis_name) for fn in LOSS_FNS.values())


def _batch(n=8, size=16, seed=0):
  """Images with a bright disc where the label is 1; images 2, 3 and 6 have no
  foreground (on 4 devices, device 1's whole slice)."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, size, size, 1)).astype(np.float32)
  yy, xx = np.mgrid[:size, :size]
  labels = np.zeros((n, size, size), np.int32)
  for i in range(n):
    if i in (2, 3, 6):
      continue
    cy, cx, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(2, 5)
    labels[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    images[i, ..., 0] += 2.0 * labels[i]
  return images, labels


IMAGES, LABELS = _batch()
# Three steps on three orders of the batch: each example meets other rows and devices.
BATCHES = [(IMAGES, LABELS), (IMAGES[::-1].copy(), LABELS[::-1].copy()),
           (np.roll(IMAGES, 3, 0), np.roll(LABELS, 3, 0))]
LR = {"cnn3": 0.1, "unet_small": 0.01}
KEY = jax.random.PRNGKey(3)


@functools.lru_cache(maxsize=None)
def _model_and_state(model_name):
  """(model, optimizer, initial host state)."""
  model = models.create(model_name)
  tx = optax.sgd(LR[model_name], momentum=0.9)
  state = jax.device_get(state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), IMAGES))
  return model, tx, state


@functools.lru_cache(maxsize=None)
def _three_steps(model_name, loss_name, layout, devices):
  """(params, [metrics per step]) after 3 steps; shared by every comparison."""
  model, tx, state = _model_and_state(model_name)
  loss_fn = every_loss if loss_name == "every" else LOSS_FNS[loss_name]
  step = make_train_step(model, loss_fn, tx, devices=devices, mode=layout)
  assert step.mode == ("single" if devices == 1 else layout)
  s, history = step.put_state(state), []
  for images, labels in BATCHES:
    s, m = step(s, images, labels, KEY)
    history.append({k: float(v) for k, v in m.items()})
  out = step.get_state(s)
  assert int(out.step) == 3
  return out.params, history


def _check_against_one_device(model_name, loss_name, layout, devices):
  params, history = _three_steps(model_name, loss_name, layout, devices)
  params1, history1 = _three_steps(model_name, loss_name, "pmap", 1)
  chex.assert_trees_all_close(params, params1, atol=PARAM_ATOL, rtol=0)
  for m, m1 in zip(history, history1):
    for k in m1:
      np.testing.assert_allclose(m[k], m1[k], rtol=METRIC_RTOL, atol=1e-7, err_msg=k)
  # The steps did something: a wrong reduction would be visible at this scale.
  _, _, state = _model_and_state(model_name)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params1),
                                                          jax.tree.leaves(state.params)))
  assert moved > 1e3 * PARAM_ATOL


@pytest.mark.parametrize("layout,devices", LAYOUTS)
@pytest.mark.parametrize("loss_name", sorted(LOSS_FNS))
def test_cnn3_every_loss_matches_one_device(loss_name, layout, devices):
  _check_against_one_device("cnn3", loss_name, layout, devices)


@pytest.mark.parametrize("layout,devices", LAYOUTS)
def test_unet_small_with_dropout_matches_one_device(layout, devices):
  """unet_small with its dropout on, trained on the sum of every loss."""
  _check_against_one_device("unet_small", "every", layout, devices)


# ---- the pieces: losses and metrics of the global batch, masks of the global row


def _mapped(fn, layout, n, *, rows_out=False):
  """fn(logits, labels, axis_name) on n devices, each holding a slice of the batch.

  Returns fn's (global) value, or with `rows_out` a pair (global value, an
  array with one row per example gathered from the slices)."""
  if layout == "pmap":
    def run(z, y):
      shard = lambda a: a.reshape((n, a.shape[0] // n) + a.shape[1:])
      out = jax.pmap(functools.partial(fn, axis_name="d"), axis_name="d",
                     devices=jax.devices()[:n])(shard(z), shard(y))
      if rows_out:
        return out[0][0], out[1].reshape((-1,) + out[1].shape[2:])
      return jax.tree.map(lambda o: o[0], out)
    return run
  mesh = jax.make_mesh((n,), ("d",), (jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])
  body = jax.shard_map(functools.partial(fn, axis_name="d"), mesh=mesh,
                       in_specs=(P("d"), P("d")), out_specs=(P(), P("d")) if rows_out else P(),
                       check_vma=False)  # as the train step
  put = lambda a: jax.device_put(a, NamedSharding(mesh, P("d")))
  return lambda z, y: jax.jit(body)(put(z), put(y))


def _value_and_logit_grad(loss):
  """fn(logits, labels, axis_name) -> (loss, dloss/dlogits of this device's slice).

  Differentiated inside the map, as the train step does: the psum's transpose
  makes each slice's gradient N times its share (see step.py), so the
  result is divided by N below."""
  return lambda z, y, axis_name: jax.value_and_grad(
      lambda z: loss(z, y, axis_name=axis_name))(z)


def _logits_labels(c=2, seed=1):
  rng = np.random.default_rng(seed)
  z = (2 * rng.standard_normal((8, 6, 5, c))).astype(np.float32)
  y = np.zeros((8, 6, 5), np.int32)
  y[:2] = rng.integers(0, c, (2, 6, 5))      # rows 2-7 (devices 1-3 of 4) are all background
  y[5, 1:3, 1:4] = 1
  return z, y


@pytest.mark.parametrize("layout", ["pmap", "shard_map"])
@pytest.mark.parametrize("n", [2, 4])
def test_losses_are_those_of_the_global_batch(layout, n):
  """Each loss on n slices == the NumPy loss of the whole batch, and so are its logit gradients."""
  z, y = _logits_labels()
  want = {"ce": ref.softmax_cross_entropy(z, y),
          "ce_weighted": ref.softmax_cross_entropy(z, y, class_weights=CLASS_WEIGHTS),
          "wce": ref.weighted_cross_entropy(z, y, beta=losses.DEFAULT_WCE_BETA),
          "dice": ref.dice_loss(z, y), "ce+dice": ref.dice_ce_loss(z, y)}
  for name, loss in LOSS_FNS.items():
    value, grad = _mapped(_value_and_logit_grad(loss), layout, n, rows_out=True)(z, y)
    np.testing.assert_allclose(float(value), want[name], rtol=1e-5, err_msg=name)
    grad1 = jax.grad(lambda z: loss(z, y))(z)
    grad = grad / n
    np.testing.assert_allclose(np.asarray(grad), np.asarray(grad1), rtol=1e-5, atol=1e-9, err_msg=name)
  # what a mean of per-device losses would give instead: visibly another number
  local = np.mean([ref.dice_loss(z[i::n], y[i::n]) for i in range(n)])
  assert abs(local - want["dice"]) > 1e-3


@pytest.mark.parametrize("layout", ["pmap", "shard_map"])
def test_metrics_are_those_of_the_global_batch(layout):
  z, y = _logits_labels(c=3)
  y[6, 0, :2] = 2
  fns = {"dice_coef": metrics.dice_coef, "pixel_accuracy": metrics.pixel_accuracy, "iou": metrics.iou,
         "per_class_dice": functools.partial(metrics.per_class_dice, empty="one")}
  want = {"dice_coef": ref.dice_coef(z, y), "pixel_accuracy": ref.pixel_accuracy(z, y),
          "iou": ref.iou(z, y), "per_class_dice": ref.per_class_dice(z, y, empty="one")}
  for name, fn in fns.items():
    got = _mapped(lambda a, b, axis_name: fn(a, b, axis_name=axis_name), layout, 4)(z, y)
    np.testing.assert_allclose(np.asarray(got), want[name], rtol=1e-6, err_msg=name)


def test_fused_pallas_loss_reduces_over_the_axis():
  z, y = _logits_labels()
  for name in ("ce", "dice", "ce+dice"):
    loss = losses.get(name, impl="pallas")
    value, grad = _mapped(_value_and_logit_grad(loss), "shard_map", 4, rows_out=True)(z, y)
    want = {"ce": ref.softmax_cross_entropy(z, y), "dice": ref.dice_loss(z, y),
            "ce+dice": ref.dice_ce_loss(z, y)}[name]
    np.testing.assert_allclose(float(value), want, rtol=1e-5, err_msg=name)
    grad1 = jax.grad(lambda z: losses.get(name)(z, y))(z)
    np.testing.assert_allclose(np.asarray(grad) / 4, np.asarray(grad1), rtol=1e-5, atol=1e-8, err_msg=name)


def test_dropout_mask_of_a_row_is_its_global_row():
  key, shape, rate = jax.random.key(5), (8, 16, 16, 4), 0.3
  full = np.asarray(layers.dropout_keep_mask(key, shape, rate))
  for offset in (0, 2, 6):
    part = layers.dropout_keep_mask(key, (2,) + shape[1:], rate, row_offset=offset)
    np.testing.assert_array_equal(np.asarray(part), full[offset:offset + 2])
  # the rows are not copies of each other: two rows agree as independent masks would
  rows = full.reshape(8, -1)
  agree = [(rows[i] == rows[j]).mean() for i in range(8) for j in range(i + 1, 8)]
  n = rows.shape[1]
  assert max(abs(a - ((1 - rate) ** 2 + rate ** 2)) for a in agree) < 5 * np.sqrt(0.25 / n)
  # the Dropout layer numbers its rows from global_rows' offset: rows 6-7 of a batch of 8
  x = jnp.arange(8 * 16 * 16 * 4, dtype=jnp.float32).reshape(shape) + 1
  drop = lambda x: np.asarray(layers.Dropout(rate).apply({}, x, train=True, rngs={"dropout": key}))
  with layers.global_rows(6):
    inside = drop(x[6:])
  np.testing.assert_array_equal(inside, drop(x)[6:])
  assert not np.array_equal(inside, drop(x[6:]))


def test_resume_on_other_devices_continues_the_run(tmp_path):
  """1 device for 2 epochs == epoch 1 on 4 devices (pmap), resumed for epoch 2 on 2 (jit).

  cnn3 with CE + Dice (the checkpoint's state has no layout; that the masks
  do not depend on the layout is tested above)."""
  import dataclasses
  from jaxseg.train import train_and_evaluate
  from train_helpers import tiny_config
  config = tiny_config(model="cnn3", loss="ce+dice", optimizer="sgd", lr=0.05, epochs=2)
  full = train_and_evaluate(config, str(tmp_path / "full"), quiet=True)
  train_and_evaluate(dataclasses.replace(config, epochs=1, devices=4, parallel="pmap"),
                     str(tmp_path / "part"), quiet=True)
  again = train_and_evaluate(dataclasses.replace(config, devices=2, parallel="jit"),
                             str(tmp_path / "part"), resume=True, quiet=True)
  assert again["steps"] == full["steps"] == 8
  for k in ("val_loss", "val_dice", "val_accuracy", "train_loss", "train_dice", "train_accuracy"):
    np.testing.assert_allclose(again[k], full[k], rtol=1e-5, err_msg=k)


def test_bench_layouts_json_and_the_jit_partitioning(capsys):
  """`jaxseg bench --what train --devices 2`: every layout timed after a checked first step;
  under jit the partitioner splits the batch and the C++ kernels run per shard (the step
  sets the mesh): all-reduces, no all-gather, as many custom calls as on one device."""
  import json
  from jaxseg import cli
  status = cli.main(["bench", "--what", "train", "--model", "cnn3", "--devices", "2", "--image-size", "32",
                     "--batch-size", "4", "--steps", "1", "--rounds", "2", "--warmup", "0", "--json"])
  assert status == 0
  res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert "wrong" not in res and res["devices"] == 2 and res["conv_impl"] == "auto"
  assert list(res["layouts"]) == ["1 device", "pmap", "shard_map", "jit"]
  for name, r in res["layouts"].items():
    assert r["step_seconds"] > 0 and r["over_one_device"] == pytest.approx(
        r["step_seconds"] / res["layouts"]["1 device"]["step_seconds"])
    np.testing.assert_allclose(res["first_step"][name]["loss"], res["first_step"]["1 device"]["loss"],
                               rtol=1e-6)
  ops, one = res["layouts"]["jit"]["hlo_ops"], res["layouts"]["1 device"]["hlo_ops"]
  assert ops.get("all-reduce", 0) >= 1 and "all-gather" not in ops and "all-reduce" not in one
  assert ops.get("custom-call", 0) == one.get("custom-call", 0)
