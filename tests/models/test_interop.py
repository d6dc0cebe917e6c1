"""jaxseg.interop.from_keras against Keras 3 on the JAX backend: same weights, same outputs."""

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported

import chex
import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("keras was imported with another backend", allow_module_level=True)

from jaxseg import interop, models  # noqa: E402
from jaxseg.errors import ConfigError  # noqa: E402
from keras import layers as kl  # noqa: E402


# The Keras models are built with zero initializers (Keras' random initializers
# compile one small XLA program per layer, minutes on a loaded CPU) and then
# get random NumPy weights, biases included, so that the bias mapping is tested too.
INIT = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}


def _randomize(model, seed):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    w = layer.get_weights()
    if len(w) == 2:
      fan_in = np.prod(w[0].shape[:-1])
      layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), w[0].shape).astype(np.float32),
                         rng.normal(0, 0.1, w[1].shape).astype(np.float32)])
  return model


def lab_fcn(size, extra_convs=0):
  """The lab's Task 2/3 Sequential model, verbatim apart from the input size."""
  conv = lambda f, k, s, **kw: kl.Conv2D(filters=f, kernel_size=[k, k], strides=s, padding="same",
                                         activation="relu", **INIT, **kw)
  return keras.Sequential(
      [keras.Input((size, size, 1)),
       conv(100, 5, 2, name="Conv1"),
       kl.MaxPool2D(pool_size=2, strides=2, padding="same"),
       conv(200, 5, 2),
       kl.MaxPool2D(pool_size=2, strides=2, padding="same")]
      + [conv(300, 3, 1) for _ in range(2 + extra_convs)]
      + [conv(2, 3, 1),
         kl.Conv2DTranspose(filters=2, kernel_size=31, strides=16, padding="same", **INIT)])


def lab_dense(size):
  """The lab's Task 1 model at a small image size (softmax over all outputs, as in the lab)."""
  return keras.Sequential([keras.Input((size, size, 1)), kl.Flatten(),
                           kl.Dense(64, activation="relu", **INIT),
                           kl.Dense(size * size * 2, activation="softmax", **INIT),
                           kl.Reshape((size, size, 2))])


def dsb_unet(size):
  """The DSB-2018 Keras U-Net starter (without its x/255 Lambda), 3 channels in, 1 sigmoid out.

  The starter's he_normal init is replaced by INIT (weights are set afterwards).
  """
  conv = lambda f: kl.Conv2D(f, (3, 3), activation="elu", padding="same", **INIT)
  inputs = keras.Input((size, size, 3))
  x, skips = inputs, []
  for f, rate in zip((16, 32, 64, 128), (0.1, 0.1, 0.2, 0.2)):
    x = conv(f)(kl.Dropout(rate)(conv(f)(x)))
    skips.append(x)
    x = kl.MaxPooling2D((2, 2))(x)
  x = conv(256)(kl.Dropout(0.3)(conv(256)(x)))
  for f, rate, skip in zip((128, 64, 32, 16), (0.2, 0.2, 0.1, 0.1), reversed(skips)):
    x = kl.Conv2DTranspose(f, (2, 2), strides=(2, 2), padding="same", **INIT)(x)
    x = kl.concatenate([x, skip])
    x = conv(f)(kl.Dropout(rate)(conv(f)(x)))
  outputs = kl.Conv2D(1, (1, 1), activation="sigmoid", **INIT)(x)
  return keras.Model(inputs, outputs)


def _keras_forward(km, x):
  # predict() runs one jitted inference program (dropout off); calling the
  # model eagerly would compile every op separately.
  return np.asarray(km.predict(x, batch_size=len(x), verbose=0))


def _ours(name, variables, x, **kw):
  return jax.jit(models.create(name, **kw).apply)(variables, x)


def _inputs(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("name,extra", [("fcn", 0), ("fcn_deep", 1)])
def test_fcn_port_matches_keras(name, extra):
  km = lab_fcn(64, extra)
  _randomize(km, 2)
  x = _inputs((2, 64, 64, 1))
  expected = _keras_forward(km, x)
  variables = interop.from_keras(km, name)
  got = _ours(name, variables, x)
  assert got.shape == (2, 64, 64, 2)
  assert np.abs(expected).max() > 1e-3  # not an all-zero comparison
  chex.assert_trees_all_close(got, expected, atol=1e-4, rtol=1e-4)


def test_fcn_port_keeps_the_lab_param_count():
  km = lab_fcn(256)
  assert km.count_params() == 1_862_648
  variables = interop.from_keras(km, "fcn")
  assert sum(v.size for v in jax.tree.leaves(variables)) == 1_862_648


def test_dense_port_matches_keras_including_its_softmax_over_all_outputs():
  km = lab_dense(32)
  _randomize(km, 4)
  x = _inputs((2, 32, 32, 1), seed=1)
  expected = _keras_forward(km, x)
  np.testing.assert_allclose(expected.reshape(2, -1).sum(-1), 1.0, rtol=1e-5)
  variables = interop.from_keras(km, "dense")
  got = _ours("dense", variables, x, image_size=32)
  chex.assert_trees_all_close(got, expected, atol=1e-9, rtol=1e-4)


def test_unet_small_port_matches_keras_at_eval():
  km = dsb_unet(32)
  assert km.count_params() == 1_941_105
  _randomize(km, 6)
  x = _inputs((1, 32, 32, 3), seed=2)
  expected = _keras_forward(km, x)
  variables = interop.from_keras(km, "unet_small")
  logits = _ours("unet_small", variables, x, in_channels=3, num_classes=1)
  chex.assert_trees_all_close(jax.nn.sigmoid(logits), expected, atol=1e-5, rtol=1e-4)


def test_mismatched_keras_model_is_a_config_error():
  with pytest.raises(ConfigError, match="weight layers"):
    interop.from_keras(lab_fcn(64, extra_convs=1), "fcn")
  with pytest.raises(ConfigError, match="does not match"):
    interop.from_keras(keras.Sequential([keras.Input((8, 8, 1)), kl.Flatten(), kl.Dense(2, **INIT),
                                         kl.Dense(2, **INIT), kl.Dense(128, **INIT),
                                         kl.Reshape((8, 8, 2))]), "cnn3")
  with pytest.raises(ConfigError, match="weight shapes"):
    interop.from_keras(keras.Sequential([keras.Input((8, 8, 1))] + [
        kl.Conv2D(f, 5, padding="same", **INIT) for f in (8, 16, 2)]), "cnn3")
