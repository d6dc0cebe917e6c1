"""The paper's valid-padding U-Net returns logits smaller than its input: the
train and eval steps score them against the centre of the labels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import losses, models
from jaxseg.train import state as state_lib
from jaxseg.train.step import center_crop_labels, make_eval_step, make_train_step


def test_center_crop_labels_takes_the_middle():
  labels = jnp.arange(2 * 6 * 7).reshape(2, 6, 7)
  logits = jnp.zeros((2, 2, 3, 5))
  got = center_crop_labels(logits, labels)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(labels)[:, 2:4, 2:5])
  assert center_crop_labels(jnp.zeros((2, 6, 7, 2)), labels) is labels


def test_valid_unet_train_and_eval_steps_use_cropped_labels():
  model = models.create("unet", base=4, depth=1)            # valid padding: 20 -> 4
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 20, 20, 1)).astype(np.float32)
  labels = (rng.random((2, 20, 20)) > 0.7).astype(np.int32)
  tx = optax.sgd(0.1)
  state = state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), images)
  logits = model.apply({"params": state.params}, images)
  assert logits.shape == (2, 4, 4, 2)
  loss_fn = losses.get("ce")
  want = float(loss_fn(logits, labels[:, 8:12, 8:12]))      # the centre 4x4, by hand
  sums, _ = make_eval_step(model, loss_fn)(state.params, images, labels)
  np.testing.assert_allclose(float(sums["loss"]) / 2, want, rtol=1e-6)
  stepper = make_train_step(model, loss_fn, tx, devices=1)
  _, metrics = stepper(stepper.put_state(state), images, labels, jax.random.PRNGKey(1))
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-6)
