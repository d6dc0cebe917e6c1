"""conv: every impl against the NumPy reference, lax's gradients, the seeds' worked examples."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import HealthCheck, given, settings
from jax.test_util import check_grads

from jaxseg import ops, reference
from jaxseg.errors import ConfigError
from ops_strategies import arrays as _arrays, conv_cases, jit_run, seeds

IMPLS = ("direct", "im2col", "matrix", "lax")
TOL = dict(atol=1e-4, rtol=1e-4)


# Each hypothesis case compiles once: all impls (or all their VJPs) in one jitted function.
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases(), seed=seeds())
def test_every_impl_equals_reference(case, seed):
  x_shape, w_shape, kw = case
  x, w = _arrays(seed, x_shape, w_shape)
  want = reference.conv(x, w, **kw)
  got = jit_run(lambda a, b: {impl: ops.conv(a, b, impl=impl, **kw) for impl in IMPLS}, x, w)
  for impl in IMPLS:
    chex.assert_trees_all_close(np.asarray(got[impl]), want, **TOL, custom_message=f"impl={impl}")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases(max_nd=2), seed=seeds())
def test_gradients_equal_lax(case, seed):
  """VJPs with a random cotangent (a cotangent of ones lets XLA simplify the backward pass)."""
  x_shape, w_shape, kw = case
  x, w = _arrays(seed, x_shape, w_shape)
  out_shape = jax.eval_shape(lambda a, b: ops.conv(a, b, **kw), x, w).shape
  (ct,) = _arrays(seed + 1, out_shape)

  def all_vjps(a, b, c):
    return {impl: jax.vjp(lambda p, q: ops.conv(p, q, impl=impl, **kw), a, b)[1](c) for impl in IMPLS}

  got = jit_run(all_vjps, x, w, ct)
  for impl in ("direct", "im2col", "matrix"):
    chex.assert_trees_all_close(got[impl], got["lax"], **TOL, custom_message=f"impl={impl}")


def test_check_grads_tiny():
  x, w = _arrays(0, (1, 3, 4, 1), (2, 2, 1, 2))
  f = jax.jit(lambda a, b: ops.conv(a, b, stride=(2, 1), padding="SAME", dilation=(1, 2), impl="direct"))
  check_grads(f, (x, w), order=1, modes=["rev"], atol=5e-2, rtol=5e-2, eps=1e-2)


class ConvVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("direct", "direct"), ("matrix", "matrix"))
  def test_2d_stride2_same_grouped(self, impl):
    x, w = _arrays(3, (2, 6, 5, 4), (3, 3, 2, 6))
    kw = dict(stride=2, padding="SAME", groups=2)
    fn = self.variant(lambda a, b: ops.conv(a, b, impl=impl, **kw))
    chex.assert_trees_all_close(np.asarray(fn(x, w)), reference.conv(x, w, **kw), **TOL)

  @chex.variants(with_pmap=True)
  def test_pmap_direct(self):
    x, w = _arrays(4, (1, 5, 5, 2), (3, 3, 2, 3))
    fn = self.variant(lambda a, b: ops.conv(a, b, padding="VALID", impl="direct"))
    chex.assert_trees_all_close(np.asarray(fn(x, w)), reference.conv(x, w, padding="VALID"), **TOL)


def test_matrix_form_runs_256x256_layer():
  """The lab FCN's first conv: 256x256x1 -> 100 channels, 5x5, stride 2, SAME."""
  x, w = _arrays(5, (1, 256, 256, 1), (5, 5, 1, 100))
  got = jax.jit(lambda a, b: ops.conv(a, b, stride=2, impl="matrix"))(x, w)
  want = ops.conv(x, w, stride=2, impl="lax")
  assert got.shape == (1, 128, 128, 100)
  chex.assert_trees_all_close(got, want, atol=1e-4, rtol=1e-4)


def test_pallas_dispatch():
  pytest.importorskip("kernels.conv")
  x, w = _arrays(6, (1, 5, 6, 2), (3, 3, 2, 3))
  got = ops.conv(x, w, stride=2, padding="SAME", impl="pallas")
  chex.assert_trees_all_close(np.asarray(got), reference.conv(x, w, stride=2, padding="SAME"), **TOL)


@pytest.mark.parametrize("x_shape,w_shape,kw,match", [
  ((1, 5, 5, 3), (3, 3, 2, 4), {}, "input channels"),
  ((1, 5, 5, 4), (3, 3, 2, 3), dict(groups=2), "output channels"),
  ((1, 5, 5, 3), (3, 3, 1, 4), dict(groups=2), "does not divide"),
  ((1, 5, 5, 3), (3, 3, 3, 4), dict(padding="FULL"), "padding"),
  ((1, 5, 5, 3), (3, 3, 3, 4), dict(padding=[(1, 1)]), "padding"),
  ((1, 5, 5, 3), (3, 3, 3, 4), dict(padding=[(-1, 0), (0, 0)]), "negative"),
  ((1, 5, 5, 3), (3, 3, 4), {}, "rank"),
  ((1, 5, 5, 3), (3, 3, 3, 4), dict(stride=0), "stride"),
  ((1, 5, 5, 3), (3, 3, 3, 4), dict(stride=(1, 2, 1)), "stride"),
  ((1, 2, 2, 3), (3, 3, 3, 4), dict(padding="VALID"), "empty output"),
  ((1, 5, 5, 3), (3, 3, 3, 4), dict(impl="fft"), "unknown conv impl"),
])
def test_bad_arguments_raise_config_error(x_shape, w_shape, kw, match):
  with pytest.raises(ConfigError, match=match):
    ops.conv(jnp.zeros(x_shape), jnp.zeros(w_shape), **kw)


# --- the seeds' worked examples -------------------------------------------------

# 000_*.txt, "Convolution Operation": the 5x5x1 input and 3x3x1 filter (as printed).
SEED_X = np.array([[0, 1, 0, 2, 2], [1, 2, 2, 1, 2], [2, 2, 1, 0, 0], [2, 1, 2, 2, 1], [0, 0, 0, 1, 0]],
                  np.float32)
SEED_F = np.array([[-1, 1, 0], [-1, 0, 1], [0, -1, 0]], np.float32)


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_000_valid_output(impl):
  want = np.array([[0, -3, 2], [-1, -4, -4], [0, 0, -3]], np.float32)   # "3x3x1 Output"
  got = ops.conv(SEED_X[None, :, :, None], SEED_F[:, :, None, None], padding="VALID", impl=impl)
  chex.assert_trees_all_close(np.asarray(got)[0, :, :, 0], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_000_zero_padded_same_output(impl):
  # "Convolution Operation (zero-padding)": the 7x7 padded input gives a 5x5
  # output. Rows 1-4 as printed; the slide's last row is garbled by the text
  # extraction, so it is checked against the NumPy reference only.
  first_rows = np.array([[0, -2, -1, 1, -4], [0, 0, -3, 2, -1], [1, -1, -4, -4, 0], [3, 0, 0, -3, -2]],
                        np.float32)
  got = np.asarray(ops.conv(SEED_X[None, :, :, None], SEED_F[:, :, None, None], padding="SAME", impl=impl))
  chex.assert_trees_all_close(got[0, :4, :, 0], first_rows, atol=1e-6, rtol=0)
  chex.assert_trees_all_close(got, reference.conv(SEED_X[None, :, :, None], SEED_F[:, :, None, None]),
                              atol=1e-6, rtol=0)
  explicit = ops.conv(SEED_X[None, :, :, None], SEED_F[:, :, None, None], padding=[(1, 1), (1, 1)], impl=impl)
  chex.assert_trees_all_close(np.asarray(explicit), got, atol=0, rtol=0)


def test_seed_002_sobel_true_convolution_is_flipped_filter():
  # 002_*.txt, "CONVOLUTION - 2D EXAMPLE": image 1..9, filter [[-1,-2,-1],[0,0,0],[1,2,1]];
  # true convolution flips the filter (Filter'), response -24. conv is a cross-correlation,
  # so the true convolution is conv with the flipped filter; unflipped gives +24.
  image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
  sobel_y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32)
  flipped = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)       # "Filter'" as printed
  np.testing.assert_array_equal(sobel_y[::-1, ::-1], flipped)
  both = np.stack([flipped, sobel_y], axis=-1)[:, :, None, :]              # (3, 3, 1, 2)
  got = jax.jit(lambda a, b: {impl: ops.conv(a, b, padding="VALID", impl=impl) for impl in IMPLS})(image, both)
  for impl in IMPLS:
    chex.assert_trees_all_close(np.asarray(got[impl]).reshape(2), np.array([-24.0, 24.0]), atol=1e-5, rtol=0,
                                custom_message=f"impl={impl}")


def test_seed_002_lenet_table_shapes_and_parameters():
  # 002_*.txt, "POOLING - REDUCE NUMBER OF PARAMETERS" (Keras default padding: valid).
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  table = [("conv", 5, 8, (28, 28, 8), 608), ("pool", 2, None, (14, 14, 8), 0),
           ("conv", 5, 16, (10, 10, 16), 3216), ("pool", 2, None, (5, 5, 16), 0)]
  for kind, k, filters, shape, params in table:
    if kind == "conv":
      w = jax.ShapeDtypeStruct((k, k, x.shape[-1], filters), jnp.float32)
      x = jax.eval_shape(lambda a, b: ops.conv(a, b, padding="VALID"), x, w)
      assert int(np.prod(w.shape)) + filters == params
    else:
      x = jax.eval_shape(lambda a: ops.max_pool(a, k), x)
    assert x.shape[1:] == shape
    assert int(np.prod(x.shape[1:])) == int(np.prod(shape))      # "Activation size"


def test_seed_002_vgg16_table_shapes_and_parameters():
  # 002_*.txt, "MODEL SUMMARY - VGG16": 3x3 SAME convs and 2x2 max-pools, 224 -> 7.
  table = [(64, 1792), (64, 36928), "pool", (128, 73856), (128, 147584), "pool",
           (256, 295168), (256, 590080), (256, 590080), "pool",
           (512, 1180160), (512, 2359808), (512, 2359808), "pool",
           (512, 2359808), (512, 2359808), (512, 2359808), "pool"]
  pooled = [(112, 64), (56, 128), (28, 256), (14, 512), (7, 512)]
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  for row in table:
    if row == "pool":
      x = jax.eval_shape(lambda a: ops.max_pool(a, 2), x)
      assert (x.shape[1], x.shape[3]) == pooled.pop(0) and x.shape[1] == x.shape[2]
    else:
      filters, params = row
      w = jax.ShapeDtypeStruct((3, 3, x.shape[-1], filters), jnp.float32)
      size = x.shape[1]
      x = jax.eval_shape(lambda a, b: ops.conv(a, b, padding="SAME"), x, w)
      assert x.shape[1:] == (size, size, filters)
      assert 3 * 3 * w.shape[2] * filters + filters == params
