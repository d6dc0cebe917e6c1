"""jaxseg.models: parameter counts of the seeds' models, shapes, conv impls, dropout, errors."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import models, ops
from jaxseg.errors import ConfigError, DataError
from jaxseg.models import layers


def _abstract(name, shape, **kw):
  """(param count, output shape) via eval_shape: nothing is allocated."""
  model = models.create(name, **kw)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  assert set(variables) == {"params"}
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables)), out.shape


def _random_variables(model, x, seed=0):
  """He-scaled NumPy weights in the model's param tree: no jitted PRNG init to compile
  (threefry takes seconds to compile on a loaded CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(x.shape, x.dtype))
  scale = lambda shape: np.sqrt(2 / math.prod(shape[:-1])) if len(shape) > 1 else 0.1
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, scale(a.shape), a.shape), jnp.float32),
                      shapes)


def _conv_params(k, cin, cout):
  return k * k * cin * cout + cout


def _unet_params(base, depth, cin, classes, k=3, nd=2):
  """Ronneberger's U-Net counted by hand: two kxk convs per level, 2x2 up-convs, 1x1 head."""
  kk = k ** nd
  total, c = 0, cin
  for level in range(depth + 1):
    f = base * 2 ** level
    total += kk * c * f + f + kk * f * f + f
    c = f
  for level in reversed(range(depth)):
    f = base * 2 ** level
    total += 2 ** nd * c * f + f                    # up-conv halves the channels
    total += kk * 2 * f * f + f + kk * f * f + f    # after concatenation: 2f in
    c = f
  return total + c * classes + classes


# The seeds' published counts (003_*: lab summaries; 004_*: the U-Net talk).
@pytest.mark.parametrize("name,shape,kw,params,out", [
    ("fcn", (1, 256, 256, 1), {}, 1_862_648, (1, 256, 256, 2)),
    ("dense", (1, 256, 256, 1), {}, 12_714_048, (1, 256, 256, 2)),
    ("unet_small", (1, 256, 256, 3), {"in_channels": 3, "num_classes": 1}, 1_941_105,
     (1, 256, 256, 1)),
    ("fcn_deep", (1, 256, 256, 1), {}, 1_862_648 + _conv_params(3, 300, 300), (1, 256, 256, 2)),
    ("cnn3", (2, 40, 24, 1), {},
     _conv_params(3, 1, 8) + _conv_params(3, 8, 16) + _conv_params(3, 16, 2), (2, 40, 24, 2)),
    ("unet", (1, 572, 572, 1), {}, _unet_params(64, 4, 1, 2), (1, 388, 388, 2)),
    ("unet", (1, 256, 256, 1), {"padding": "same"}, _unet_params(64, 4, 1, 2), (1, 256, 256, 2)),
    ("unet3d", (1, 16, 32, 32, 1), {"base": 4, "depth": 4, "norm": "none", "max_features": None},
     _unet_params(4, 4, 1, 2, nd=3), (1, 16, 32, 32, 2)),
])
def test_param_counts_and_output_shapes(name, shape, kw, params, out):
  assert _abstract(name, shape, **kw) == (params, out)


def test_fcn_takes_any_multiple_of_16_and_dense_its_image_size():
  assert _abstract("fcn", (3, 64, 48, 1))[1] == (3, 64, 48, 2)
  assert _abstract("fcn", (1, 64, 64, 1), num_classes=4)[1] == (1, 64, 64, 4)
  n, out = _abstract("dense", (2, 32, 32, 1), image_size=32)
  assert (n, out) == (32 * 32 * 64 + 64 + 64 * 32 * 32 * 2 + 32 * 32 * 2, (2, 32, 32, 2))
  assert _abstract("dense", (2, 32, 32, 1)) == (n, out)  # image_size from the input
  assert _abstract("dense", (1, 16, 8, 1))[1] == (1, 16, 8, 2)


def test_size_multiple():
  assert [models.size_multiple(m) for m in ("fcn", "fcn_deep", "unet_small", "unet")] == [16] * 4
  assert models.size_multiple("unet3d_small") == 8 and models.size_multiple("unet3d") == 32
  assert models.size_multiple("cnn3") == 1
  assert models.size_multiple("dense") == 1 and models.size_multiple("dense", image_size=32) == 32
  assert models.size_multiple("unet", depth=2) == 4
  assert set(models.MODELS) >= {"dense", "fcn", "fcn_deep", "cnn3", "unet_small", "unet", "unet3d"}


def _np_conv_same(x, w, b):
  """3x3 stride-1 SAME cross-correlation, NHWC, plain NumPy."""
  k = w.shape[0]
  p = k // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  out = np.zeros(x.shape[:3] + (w.shape[-1],))
  for i in range(k):
    for j in range(k):
      out += xp[:, i:i + x.shape[1], j:j + x.shape[2], :] @ w[i, j]
  return out + b


def test_cnn3_matches_numpy_forward():
  model = models.create("cnn3")
  x = np.random.default_rng(0).normal(size=(2, 9, 7, 1)).astype(np.float32)
  variables = _random_variables(model, x, seed=1)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  h = np.maximum(_np_conv_same(x, p["conv1"]["kernel"], p["conv1"]["bias"]), 0)
  h = np.maximum(_np_conv_same(h, p["conv2"]["kernel"], p["conv2"]["bias"]), 0)
  expected = _np_conv_same(h, p["conv3"]["kernel"], p["conv3"]["bias"])
  chex.assert_trees_all_close(jax.jit(model.apply)(variables, x), expected, atol=1e-5, rtol=1e-5)


def test_init_is_keras_default_glorot_uniform_and_zero_bias():
  params = layers.Conv(16, (3, 3)).init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)))["params"]
  k = np.asarray(params["kernel"])  # (3, 3, 8, 16)
  limit = math.sqrt(6 / (9 * 8 + 9 * 16))
  assert np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit
  assert not np.any(np.asarray(params["bias"]))


def test_center_crop_concat_crops_the_skip_to_the_middle():
  x = jnp.zeros((1, 2, 3, 1))
  skip = jnp.arange(6 * 7, dtype=jnp.float32).reshape(1, 6, 7, 1)
  out = layers.CenterCropConcat().apply({}, x, skip)
  np.testing.assert_array_equal(out[..., 1], np.arange(42).reshape(6, 7)[None, 2:4, 2:5])


def test_dense_keeps_the_labs_softmax_over_all_outputs():
  model = models.create("dense", image_size=8)
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
  variables = _random_variables(model, x)
  out = jax.jit(model.apply)(variables, x)
  np.testing.assert_allclose(np.asarray(out).reshape(2, -1).sum(-1), 1.0, rtol=1e-5)
  # What the lab's loss saw: a per-pixel softmax of ~1/128-sized numbers, i.e. ~0.5 everywhere.
  np.testing.assert_allclose(jax.nn.softmax(out, axis=-1), 0.5, atol=0.05)
  raw = models.create("dense", image_size=8, lab_softmax=False).apply(variables, x)
  chex.assert_trees_all_close(jax.nn.softmax(raw.reshape(2, -1), axis=-1).reshape(out.shape), out,
                              atol=1e-7, rtol=1e-5)


def test_dropout_only_in_training_and_deterministic_per_rng():
  # unet_small's dropout layers on a tiny U-Net (same code, faster compile).
  model = models.create("unet", in_channels=3, num_classes=1, base=2, depth=1, padding="same",
                        activation="elu", dropout=(0.2, 0.3))
  x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32)
  variables = _random_variables(model, x)
  apply = jax.jit(model.apply, static_argnames="train")
  eval_a = apply(variables, x, train=False, rngs={"dropout": jax.random.key(1)})
  eval_b = apply(variables, x, train=False, rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(eval_a, eval_b)
  np.testing.assert_array_equal(eval_a, apply(variables, x))
  train_a = apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(train_a, apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)}))
  assert np.abs(np.asarray(train_a) - np.asarray(eval_a)).max() > 1e-4
  train_c = apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
  assert np.abs(np.asarray(train_a) - np.asarray(train_c)).max() > 1e-4


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_dropout_mask_statistics(rate):
  """The hash-based mask keeps 1 - rate of the values, independently of position and key."""
  n = 2**20
  a = np.asarray(layers.dropout_keep_mask(jax.random.key(0), (4, 256, 256, 4), rate)).reshape(-1)
  b = np.asarray(layers.dropout_keep_mask(jax.random.key(1), (4, 256, 256, 4), rate)).reshape(-1)
  sd = np.sqrt(rate * (1 - rate) / n)
  assert abs(a.mean() - (1 - rate)) < 5 * sd
  # neighbours (the next element, the next channel group, the next row) are uncorrelated
  for lag in (1, 4, 1024):
    assert abs(np.corrcoef(a[:-lag], a[lag:])[0, 1]) < 5 / np.sqrt(n)
  # two keys agree as often as two independent masks would: (1-r)^2 + r^2
  assert abs((a == b).mean() - ((1 - rate) ** 2 + rate ** 2)) < 5 * np.sqrt(0.25 / n)
  # inverted dropout keeps the mean
  x = jnp.ones((4, 256, 256, 4))
  y = layers.Dropout(rate).apply({}, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert abs(float(y.mean()) - 1.0) < 5 * sd / (1 - rate)
  np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / (1 - rate)], rtol=1e-6)


def test_errors():
  with pytest.raises(ConfigError, match="unknown model 'nope'.*fcn.*unet3d"):
    models.create("nope")
  with pytest.raises(ConfigError, match="unknown model"):
    models.size_multiple("nope")
  with pytest.raises(ConfigError, match="conv_impl 'fft'"):
    models.create("fcn", conv_impl="fft")
  with pytest.raises(ConfigError, match="bad option"):
    models.create("fcn", widht=3)
  with pytest.raises(ConfigError, match="padding"):
    models.create("unet", padding="full").init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  fcn = models.create("fcn")
  with pytest.raises(DataError, match="multiples of 16"):
    jax.eval_shape(fcn.init, jax.random.key(0), jnp.zeros((1, 40, 48, 1)))
  with pytest.raises(DataError, match="1 input channel"):
    jax.eval_shape(fcn.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(DataError, match="32x32"):
    jax.eval_shape(models.create("dense", image_size=32).init, jax.random.key(0),
                   jnp.zeros((1, 64, 64, 1)))


# Small versions of every model; each must give the same logits on every impl.
SMALL = {
    "cnn3": ((2, 12, 10, 1), {}),
    "fcn": ((1, 32, 32, 1), {}),
    "dense": ((2, 8, 8, 1), {"image_size": 8, "lab_softmax": False}),
    "unet_small": ((1, 16, 16, 3), {"in_channels": 3, "num_classes": 1, "base": 4}),  # narrower
    "unet": ((1, 44, 44, 1), {"base": 4, "depth": 2}),  # valid: 44 -> 4
    "unet3d": ((1, 8, 8, 8, 1), {"base": 2, "depth": 1}),
}


# One non-lax impl per model keeps the compile time down: "direct" unrolls one
# term per kernel tap, so the FCN's 31x31 transposed conv (961 taps) takes
# minutes to compile and the FCN is checked on im2col (+ col2im) instead.
@pytest.mark.parametrize("name,impl", [
    ("cnn3", "im2col"), ("cnn3", "direct"), ("dense", "direct"), ("fcn", "im2col"), ("fcn", "auto"),
    ("unet", "direct"), ("unet_small", "im2col"), ("unet_small", "auto"), ("unet3d", "im2col"),
    ("unet3d", "auto"),
])
def test_conv_impls_agree_with_lax(name, impl):
  # unet covers unpadded convs and cropped skips; unet_small SAME padding, ELU and dropout layers.
  # Every impl listed must run: an error is a failure, never a skip.
  shape, kw = SMALL[name]
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  variables = _random_variables(models.create(name, **kw), x)
  expected = jax.jit(models.create(name, conv_impl="lax", **kw).apply)(variables, x)
  got = jax.jit(models.create(name, conv_impl=impl, **kw).apply)(variables, x)
  assert np.abs(np.asarray(expected)).max() > 1e-3
  chex.assert_trees_all_close(got, expected, atol=1e-4, rtol=1e-4)


def test_models_default_to_auto_and_transposed_convs_use_the_adjoint_impl():
  assert models.create("fcn").conv_impl == "auto"
  assert layers.transpose_impl("im2col") == "col2im"
  for impl in ("auto", "lax", "direct", "matrix", "pallas"):
    assert layers.transpose_impl(impl) == impl
  # An auto up-conv (phase form on the CPU) gives XLA's transposed conv, values and gradients.
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
  w = jax.random.normal(jax.random.key(2), (2, 2, 3, 8))
  g = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
  layer = layers.ConvTranspose(3, (2, 2), strides=2, use_bias=False)

  @jax.jit
  def value_and_vjps(x, w, g):
    outs = {}
    y, vjp = jax.vjp(lambda a, b: layer.apply({"params": {"kernel": b}}, a), x, w)
    outs["auto"] = (y, *vjp(g))
    y, vjp = jax.vjp(lambda a, b: ops.conv_transpose(a, b, stride=2, impl="lax"), x, w)
    outs["lax"] = (y, *vjp(g))
    return outs

  outs = value_and_vjps(x, w, g)
  chex.assert_trees_all_close(outs["auto"], outs["lax"], atol=1e-5, rtol=1e-5)


def test_elu_values_and_derivative_equal_numpy():
  import jax
  from jaxseg.models import layers
  x = np.array([-80.0, -20.0, -3.0, -1.0, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 1.0, 7.5, 60.0], np.float32)
  x64 = x.astype(np.float64)
  want = np.where(x64 > 0, x64, np.expm1(x64))
  dwant = np.where(x64 > 0, 1.0, np.exp(x64))          # d/dx at 0 is exp(0) = 1 from both sides
  y, vjp = jax.vjp(layers.elu, jax.numpy.asarray(x))
  (dx,) = vjp(jax.numpy.ones_like(y))
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-6, atol=1e-12)
  # from the output, exp(x) = y + 1 carries float32's rounding of y near -1:
  # absolute error up to half an ulp of 1 (6e-8) where exp(x) is tiny
  np.testing.assert_allclose(np.asarray(dx), dwant, rtol=1e-6, atol=6e-8)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.nn.elu(x)))
  # second derivative (through the custom rule): exp(x) below 0, 0 above
  d2 = jax.vmap(jax.grad(jax.grad(lambda v: layers.elu(v))))(jax.numpy.asarray(x))
  np.testing.assert_allclose(np.asarray(d2), np.where(x64 > 0, 0.0, np.exp(x64)), rtol=1e-5, atol=6e-8)
