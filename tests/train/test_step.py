"""Train/eval steps: one SGD step by hand, the lr schedule, evaluation (data parallelism: test_parallel.py)."""

import dataclasses

import chex
import jax
import numpy as np

from jaxseg import losses, models
from jaxseg.train import evaluate, make_train_step
from jaxseg.train import state as state_lib
from train_helpers import tiny_config


def _setup(config, n=8, size=16, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, size, size, 1)).astype(np.float32)
  labels = (images[..., 0] > 0.5).astype(np.int32)
  model = models.create(config.model, num_classes=2)
  tx = state_lib.make_optimizer(config)
  state = jax.device_get(state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), images))
  return model, tx, state, images, labels


def test_one_sgd_step_is_params_minus_lr_times_grad():
  config = tiny_config(optimizer="sgd", lr=0.05)
  model, tx, state, images, labels = _setup(config)
  loss_fn = losses.get("ce")

  def loss_of(p):
    return loss_fn(model.apply({"params": p}, images), labels)

  expected_loss, grads = jax.value_and_grad(loss_of)(state.params)
  step = make_train_step(model, loss_fn, tx, devices=1)
  new, metrics = step(step.put_state(state), images, labels, jax.random.PRNGKey(1))
  new = step.get_state(new)
  # SGD with momentum: the first step is a plain gradient step.
  expected = jax.tree.map(lambda p, g: p - 0.05 * g, state.params, grads)
  chex.assert_trees_all_close(new.params, expected, atol=1e-6, rtol=1e-5)
  assert int(new.step) == 1
  np.testing.assert_allclose(float(metrics["loss"]), float(expected_loss), rtol=1e-6)
  acc = np.mean(np.asarray(model.apply({"params": state.params}, images)).argmax(-1) == labels)
  np.testing.assert_allclose(float(metrics["accuracy"]), acc, rtol=1e-6)


def test_exponential_decay_is_the_labs_formula():
  config = tiny_config(lr=0.01, decay_rate=0.5, decay_steps=10)
  sched_tx = state_lib.make_optimizer(dataclasses.replace(config, optimizer="sgd"))
  del sched_tx
  import optax
  sched = optax.exponential_decay(config.lr, config.decay_steps, config.decay_rate)
  for s in (0, 5, 10, 25):
    np.testing.assert_allclose(float(sched(s)), 0.01 * 0.5 ** (s / 10), rtol=1e-6)


def _numpy_dice(pred, label, smooth=1.0):
  inter = (pred * (label == 1)).sum()
  return (2 * inter + smooth) / (pred.sum() + (label == 1).sum() + smooth)


def test_evaluate_covers_every_val_image_with_a_remainder():
  from jaxseg import data as data_lib
  config = tiny_config()
  model, _, state, images, labels = _setup(config, n=7)
  ds = data_lib.Dataset(images=images, labels=labels, cases=np.array([f"c{i}" for i in range(7)]),
                        name="t")
  out = evaluate(model, state.params, ds, batch_size=3, loss_fn=losses.get("ce"))
  logits = np.asarray(model.apply({"params": state.params}, images), np.float64)
  pred = logits.argmax(-1)
  dice = np.mean([_numpy_dice(pred[i], labels[i]) for i in range(7)])
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, labels[..., None], -1).mean()
  assert out["val_images"] == 7
  np.testing.assert_allclose(out["val_dice"], dice, rtol=1e-5)
  np.testing.assert_allclose(out["val_accuracy"], (pred == labels).mean(), rtol=1e-6)
  np.testing.assert_allclose(out["val_loss"], ce, rtol=1e-4)
