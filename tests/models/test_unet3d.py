"""The 3-D U-Nets: parameter counts by hand, instance norm against NumPy, 2-D/3-D mix-ups named."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import cli, models
from jaxseg.errors import DataError
from jaxseg.models import layers
from jaxseg.models.summary import count_params, layer_rows


def test_unet3d_small_parameter_count_by_hand():
  conv = lambda cin, cout: 27 * cin * cout + cout     # 3x3x3 kernel + bias
  up = lambda cin, cout: 8 * cin * cout + cout        # 2x2x2 transposed conv + bias
  norm = lambda c: 2 * c                              # instance norm scale + bias
  stage = lambda cin, c: conv(cin, c) + norm(c) + conv(c, c) + norm(c)
  expected = (
      stage(1, 16) + stage(16, 32) + stage(32, 64)    # 7,440 + 41,664 + 166,272
      + stage(64, 128)                                # bottom: 664,320
      + up(128, 64) + stage(128, 64)                  # 65,600 + 332,160
      + up(64, 32) + stage(64, 32)                    # 16,416 + 83,136
      + up(32, 16) + stage(32, 16)                    # 4,112 + 20,832
      + 16 * 2 + 2)                                   # 1x1x1 head
  assert expected == 1_401_986
  model = models.create("unet3d_small")
  assert count_params(model, (1, 16, 64, 64, 1)) == expected
  rows = layer_rows(model, (1, 16, 64, 64, 1))
  assert sum(r.params for r in rows) == expected
  assert [r.output_shape for r in rows if r.name == "bottom_conv2"] == [(None, 2, 8, 8, 128)]
  assert rows[-1].output_shape == (None, 16, 64, 64, 2)


def test_unet3d_is_nnunets_full_resolution_plan():
  model = models.create("unet3d")
  widths = [model.features(level) for level in range(model.depth + 1)]
  assert widths == [32, 64, 128, 256, 320, 320]
  conv = lambda cin, cout: 27 * cin * cout + cout
  stage = lambda cin, c: conv(cin, c) + conv(c, c) + 4 * c
  expected, cin = 0, 1
  for c in widths:
    expected += stage(cin, c)
    cin = c
  for c in widths[-2::-1]:
    expected += 8 * cin * c + c + stage(2 * c, c)
    cin = c
  expected += 32 * 2 + 2
  assert count_params(model, (1, 32, 32, 32, 1)) == expected == 31_194_050
  assert models.size_multiple("unet3d") == 32 and models.spatial_dims("unet3d") == 3


@pytest.mark.parametrize("name,total", [("unet3d_small", "1,401,986"), ("unet3d", "31,194,050")])
def test_summary_command_counts_the_3d_models(capsys, name, total):
  assert cli.main(["summary", "--model", name]) == 0
  text = capsys.readouterr().out
  assert f"Total params: {total}" in text and "InstanceNorm" in text
  assert cli.main(["summary", "--model", name, "--image-size", "32", "--json"]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["input_shape"] == [None, 32, 32, 32, 1]
  assert f"{out['total_params']:,}" == total


def test_instance_norm_matches_numpy():
  x = np.random.default_rng(0).normal(3, 2, size=(2, 3, 5, 4, 6)).astype(np.float32)
  scale = np.linspace(0.5, 2, 6).astype(np.float32)
  bias = np.linspace(-1, 1, 6).astype(np.float32)
  got = layers.InstanceNorm().apply({"params": {"scale": scale, "bias": bias}}, x)
  x64 = x.astype(np.float64)
  mean = x64.mean(axis=(1, 2, 3), keepdims=True)
  var = ((x64 - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(got, (x64 - mean) / np.sqrt(var + 1e-5) * scale + bias, rtol=1e-5, atol=1e-5)
  init = layers.InstanceNorm().init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
  assert np.all(init["scale"] == 1) and np.all(init["bias"] == 0)


def _instance_norm_np(x, scale, bias):
  mean = x.mean(axis=tuple(range(1, x.ndim - 1)), keepdims=True)
  var = ((x - mean) ** 2).mean(axis=tuple(range(1, x.ndim - 1)), keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * scale + bias


@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 6), (3, 7, 5, 2)])
def test_instance_norm_gradient_matches_finite_differences(shape):
  # The closed-form gradient against central differences of the float64 NumPy forward (every
  # scale and bias entry, 25 entries of x) and against JAX's derivative of the plain formula.
  r = np.random.default_rng(1)
  x = r.normal(1.5, 2, size=shape)
  scale, bias = r.normal(1, 0.5, size=shape[-1]), r.normal(0, 1, size=shape[-1])
  g = r.standard_normal(shape)
  dx, ds, db = jax.grad(lambda *a: jnp.sum(layers.instance_norm(*a) * g), argnums=(0, 1, 2))(
      *(jnp.asarray(a, jnp.float32) for a in (x, scale, bias)))

  def f(x, scale, bias):
    return float(np.sum(_instance_norm_np(x, scale, bias) * g))

  def central(arrays, which, index, h=1e-6):
    plus = [a.copy() for a in arrays]
    minus = [a.copy() for a in arrays]
    plus[which][index] += h
    minus[which][index] -= h
    return (f(*plus) - f(*minus)) / (2 * h)

  args = [x, scale, bias]
  for c in range(shape[-1]):
    np.testing.assert_allclose(ds[c], central(args, 1, c), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db[c], central(args, 2, c), rtol=1e-4, atol=1e-4)
  for flat in r.choice(x.size, 25, replace=False):
    index = np.unravel_index(flat, shape)
    np.testing.assert_allclose(dx[index], central(args, 0, index), rtol=1e-4, atol=1e-4)

  def plain(x, scale, bias):
    axes = tuple(range(1, x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return jnp.sum(((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias) * g)
  want = jax.grad(plain, argnums=(0, 1, 2))(*(jnp.asarray(a, jnp.float32) for a in (x, scale, bias)))
  for got, ref in zip((dx, ds, db), want):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_unet3d_small_forward_shape_and_leaky_relu():
  model = models.create("unet3d_small", base=2)
  x = jax.ShapeDtypeStruct((2, 8, 24, 16, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 8, 24, 16, 2)
  assert model.norm == "instance" and model.activation == "leaky_relu"


@pytest.mark.parametrize("name,shape,kind", [
    ("unet3d_small", (1, 16, 16, 1), "3-D model"),
    ("unet3d", (1, 32, 32, 1), "3-D model"),
    ("unet_small", (1, 16, 16, 16, 1), "2-D model"),
    ("fcn_deep", (1, 16, 16, 16, 1), "2-D model"),
    ("cnn3", (1, 16, 16, 16, 1), "2-D model"),
    ("dense", (1, 8, 8, 8, 1), "2-D model"),
])
def test_a_2d_model_given_volumes_or_the_reverse_names_the_model_asked_for(name, shape, kind):
  model = models.create(name)
  with pytest.raises(DataError) as e:
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
  msg = str(e.value)
  assert msg.startswith(f"model {name!r} is a {kind}") and "\n" not in msg, msg
  assert str(shape) in msg


def test_train_cli_names_unet3d_small_when_given_2d_data(tmp_path, capsys):
  work = tmp_path / "w"
  status = cli.main(["train", "--model", "unet3d_small", "--data", "synthetic:4,2,16",
                     "--epochs", "1", "--workdir", str(work)])
  err = capsys.readouterr().err
  assert status == 2 and len(err.strip().splitlines()) == 1, err
  assert "model 'unet3d_small' is a 3-D model" in err and "'unet'" not in err
  assert not work.exists() or not any(work.iterdir())


def test_size_multiple_and_spatial_dims_follow_the_presets():
  assert models.size_multiple("unet3d_small") == 2 ** 3
  assert models.size_multiple("unet3d_small", depth=2) == 4
  assert [models.spatial_dims(n) for n in ("fcn", "unet_small", "unet", "unet3d_small", "unet3d")] == [
      2, 2, 2, 3, 3]
  assert math.prod(models.create("unet3d_small").features(l) for l in range(4)) == 16 * 32 * 64 * 128
