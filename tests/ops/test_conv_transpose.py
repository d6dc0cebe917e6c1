"""conv_transpose and conv_matrix: the reference scatter, the adjoint of conv, W^T, Keras' output sizes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import HealthCheck, given, settings

from jaxseg import ops, reference
from jaxseg.errors import ConfigError
from ops_strategies import arrays, conv_cases, conv_transpose_cases, jit_run, seeds

IMPLS = ("direct", "matrix", "lax", "col2im")
TOL = dict(atol=1e-4, rtol=1e-4)


def _all_impls(y, w, kw, impls=IMPLS):
  return jit_run(lambda a, b: {impl: ops.conv_transpose(a, b, impl=impl, **kw) for impl in impls}, y, w)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_transpose_cases(), seed=seeds())
def test_every_impl_equals_reference_scatter_and_is_the_adjoint(case, seed):
  y_shape, w_shape, kw = case
  y, w = arrays(seed, y_shape, w_shape)
  want = reference.conv_transpose(y, w, **kw)
  got = _all_impls(y, w, kw)
  for impl in IMPLS:
    chex.assert_trees_all_close(np.asarray(got[impl]), want, **TOL, custom_message=f"impl={impl}")
  # Dot-product test: <conv(x), y> == <x, conv_transpose(y)>, conv from the NumPy reference.
  # (Skipped only for Keras' SAME + output_padding sizes that no TF-SAME conv produces.)
  (x,) = arrays(seed + 1, want.shape)
  conv_kw = {k: v for k, v in kw.items() if k != "output_padding"}
  conv_x = reference.conv(x, w, **conv_kw)
  if conv_x.shape != y.shape:
    assert kw["padding"] == "SAME" and kw["output_padding"] is not None
    return
  np.testing.assert_allclose(np.vdot(conv_x, y), np.vdot(x, np.asarray(got["col2im"], np.float64)),
                             rtol=1e-4, atol=1e-4)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_transpose_cases(max_nd=2), seed=seeds())
def test_gradients_equal_lax(case, seed):
  y_shape, w_shape, kw = case
  y, w = arrays(seed, y_shape, w_shape)
  out_shape = jax.eval_shape(lambda a, b: ops.conv_transpose(a, b, **kw), y, w).shape
  (ct,) = arrays(seed + 1, out_shape)

  def all_vjps(a, b, c):
    return {impl: jax.vjp(lambda p, q: ops.conv_transpose(p, q, impl=impl, **kw), a, b)[1](c) for impl in IMPLS}

  got = jit_run(all_vjps, y, w, ct)
  for impl in ("direct", "matrix", "col2im"):
    chex.assert_trees_all_close(got[impl], got["lax"], **TOL, custom_message=f"impl={impl}")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases(), seed=seeds())
def test_conv_matrix_is_conv_and_its_transpose_is_linear_transpose(case, seed):
  x_shape, w_shape, kw = case
  x, w = arrays(seed, (1,) + x_shape[1:], w_shape)
  want = reference.conv(x, w, **kw)
  (y,) = arrays(seed + 1, want.shape)

  def both(x, w, y):
    m = ops.conv_matrix(w, x.shape[1:], **kw)
    conv_t = jax.linear_transpose(lambda a: ops.conv(a, w, **kw), x)(y)[0]
    return m @ x.reshape(-1), m.T @ y.reshape(-1), conv_t

  mx, mty, conv_t = jit_run(both, x, w, y)
  chex.assert_trees_all_close(np.asarray(mx).reshape(want.shape), want, **TOL)
  chex.assert_trees_all_close(mty.reshape(x.shape), conv_t, **TOL)
  if kw["groups"] == 1:
    ct = reference.conv_transpose(y, w, stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"])
    if ct.shape == x.shape:   # x's size is the one Keras' rule gives (not always: e.g. VALID with a remainder)
      chex.assert_trees_all_close(np.asarray(mty).reshape(x.shape), ct, **TOL)


def test_conv_matrix_dense_small_example():
  """1-D, one channel, kernel (1, 2, 3), VALID: the banded matrix of the lecture."""
  w = jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
  m, m2 = jit_run(lambda w: (ops.conv_matrix(w, (5, 1), padding="VALID").todense(),
                             ops.conv_matrix(w, (5, 1), stride=2, padding="SAME").todense()), w)  # SAME: pads (1, 1)
  want = np.array([[1, 2, 3, 0, 0], [0, 1, 2, 3, 0], [0, 0, 1, 2, 3]], np.float32)
  chex.assert_trees_all_close(np.asarray(m), want, atol=0, rtol=0)
  want2 = np.array([[2, 3, 0, 0, 0], [0, 1, 2, 3, 0], [0, 0, 0, 1, 2]], np.float32)
  chex.assert_trees_all_close(np.asarray(m2), want2, atol=0, rtol=0)


@pytest.mark.parametrize("n,k,padding,s,d,op,want", [
  (16, 31, "same", 16, 1, None, 256),        # the lab FCN's Conv2DTranspose
  (16, 31, "valid", 16, 1, None, 271),       # 16*16 + (31 - 16)
  (4, 3, "valid", 2, 1, None, 9),
  (4, 2, "valid", 3, 1, None, 12),           # k < s: in*s
  (4, 3, "same", 2, 1, 1, 8),                # (4-1)*2 + 3 - 2*1 + 1
  (4, 3, "valid", 2, 2, None, 11),           # dilated k_eff = 5: 8 + 3
  (4, 3, (1, 0), 2, 1, 1, 9),                # explicit: (4-1)*2 + 3 - 1 + 1
])
def test_keras_deconv_output_length(n, k, padding, s, d, op, want):
  y = jax.ShapeDtypeStruct((1, n, 2), jnp.float32)
  w = jax.ShapeDtypeStruct((k, 3, 2), jnp.float32)
  pad = padding.upper() if isinstance(padding, str) else [padding]
  out = jax.eval_shape(lambda a, b: ops.conv_transpose(a, b, stride=s, padding=pad, output_padding=op,
                                                       dilation=d), y, w)
  assert out.shape == (1, want, 3)
  assert reference.deconv_output_length(n, k, padding, s, d, op) == want


def test_lab_fcn_upsampling_16_to_256():
  """Lab FCN: Conv2DTranspose(2, 31, strides=16, padding='same') on 16x16x2 -> 256x256x2."""
  y, w = arrays(7, (1, 16, 16, 2), (31, 31, 2, 2))
  got = jax.jit(lambda a, b: {i: ops.conv_transpose(a, b, stride=16, impl=i) for i in ("lax", "col2im")})(y, w)
  assert got["col2im"].shape == (1, 256, 256, 2)
  conv_t = jax.jit(lambda y, w: jax.linear_transpose(lambda a: ops.conv(a, w, stride=16),
                                                      jnp.zeros((1, 256, 256, 2)))(y)[0])(y, w)
  for impl in ("lax", "col2im"):
    chex.assert_trees_all_close(got[impl], conv_t, atol=1e-4, rtol=1e-4, custom_message=f"impl={impl}")


class ConvTransposeVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("col2im", "col2im"))
  def test_2d_stride2_same(self, impl):
    y, w = arrays(8, (2, 3, 4, 3), (3, 4, 2, 3))
    kw = dict(stride=2, padding="SAME", dilation=(1, 2))
    fn = self.variant(lambda a, b: ops.conv_transpose(a, b, impl=impl, **kw))
    chex.assert_trees_all_close(np.asarray(fn(y, w)), reference.conv_transpose(y, w, **kw), **TOL)


def test_pallas_dispatch():
  pytest.importorskip("kernels.conv_transpose")
  y, w = arrays(9, (1, 3, 3, 2), (3, 3, 2, 2))
  got = ops.conv_transpose(y, w, stride=2, padding="SAME", impl="pallas")
  chex.assert_trees_all_close(np.asarray(got), reference.conv_transpose(y, w, stride=2, padding="SAME"), **TOL)


@pytest.mark.parametrize("y_shape,w_shape,kw,match", [
  ((1, 4, 4, 3), (3, 3, 2, 2), {}, "input channels"),
  ((1, 4, 4, 2), (3, 3, 2, 2), dict(stride=2, output_padding=2), "output_padding"),
  ((1, 4, 4, 2), (3, 3, 2, 2), dict(output_padding=-1), "output_padding"),
  ((1, 4, 4, 2), (3, 3, 2, 2), dict(padding="FULL"), "padding"),
  ((1, 4, 4, 2), (3, 3, 2), {}, "rank"),
  ((1, 4, 4, 2), (3, 3, 2, 2), dict(impl="fft"), "unknown conv_transpose impl"),
])
def test_bad_arguments_raise_config_error(y_shape, w_shape, kw, match):
  with pytest.raises(ConfigError, match=match):
    ops.conv_transpose(jnp.zeros(y_shape), jnp.zeros(w_shape), **kw)
