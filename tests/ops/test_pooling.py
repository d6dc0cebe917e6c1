"""Pooling: reference loops, lax's max-pool gradient (incl. ties), SAME averages, unpooling."""

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from jaxseg import ops, reference
from jaxseg.errors import ConfigError
from ops_strategies import arrays, jit_run, seeds

TOL = dict(atol=1e-5, rtol=1e-5)


@st.composite
def pool_cases(draw):
  nd = draw(st.integers(1, 3))
  size_max = {1: 9, 2: 7, 3: 5}[nd]
  spatial = tuple(draw(st.lists(st.integers(1, size_max), min_size=nd, max_size=nd)))
  window = tuple(draw(st.lists(st.integers(1, 3 if nd < 3 else 2), min_size=nd, max_size=nd)))
  stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * nd)))
  padding = draw(st.sampled_from(["SAME", "VALID"]))
  if padding == "VALID":
    assume(all(i >= k for i, k in zip(spatial, window)))
  return (draw(st.integers(1, 2)),) + spatial + (draw(st.integers(1, 3)),), dict(window=window, stride=stride,
                                                                                  padding=padding)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pool_cases(), seed=seeds())
def test_pools_equal_reference_and_gradients_equal_lax(case, seed):
  shape, kw = case
  (x,) = arrays(seed, shape)
  want_max = reference.max_pool(x, kw["window"], stride=kw["stride"], padding=kw["padding"])
  want_avg = reference.avg_pool(x, kw["window"], stride=kw["stride"], padding=kw["padding"])
  want_idx = reference.max_pool_argmax(x, kw["window"], stride=kw["stride"], padding=kw["padding"])
  (ct,) = arrays(seed + 1, want_max.shape)

  def everything(x, ct):
    w, s, p = kw["window"], kw["stride"], kw["padding"]
    y, vjp = jax.vjp(lambda a: ops.max_pool(a, w, stride=s, padding=p), x)
    _, vjp_lax = jax.vjp(lambda a: ops.max_pool_lax(a, w, stride=s, padding=p), x)
    avg, vjp_avg = jax.vjp(lambda a: ops.avg_pool(a, w, stride=s, padding=p), x)
    y_arg, idx = ops.max_pool_with_argmax(x, w, stride=s, padding=p)
    unpooled = ops.max_unpool(y_arg, idx, x.shape[1:-1])
    return dict(y=y, g=vjp(ct)[0], g_lax=vjp_lax(ct)[0], avg=avg, g_avg=vjp_avg(ct)[0], y_arg=y_arg, idx=idx,
                unpooled=unpooled)

  got = jit_run(everything, x, ct)
  chex.assert_trees_all_close(np.asarray(got["y"]), want_max, **TOL)
  chex.assert_trees_all_close(np.asarray(got["y_arg"]), want_max, **TOL)
  chex.assert_trees_all_close(np.asarray(got["avg"]), want_avg, **TOL)
  np.testing.assert_array_equal(np.asarray(got["idx"]), want_idx)
  chex.assert_trees_all_close(got["g"], got["g_lax"], atol=0, rtol=0)
  # avg_pool is linear: its VJP is its transpose, checked against the reference forward.
  np.testing.assert_allclose(np.vdot(want_avg, ct), np.vdot(x, np.asarray(got["g_avg"], np.float64)),
                             rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(np.asarray(got["unpooled"]),
                              reference.max_unpool(want_max, want_idx, x.shape[1:-1]), **TOL)


@pytest.mark.parametrize("shape,window,padding", [
  ((2, 6, 8, 3), 2, "VALID"), ((2, 5, 7, 3), 2, "SAME"), ((1, 4, 6, 4, 2), (2, 3, 2), "SAME"),
  ((2, 7, 3), 3, "VALID"),
])
def test_max_pool_gradient_with_ties_equals_lax(shape, window, padding):
  """Ties everywhere (ReLU zeros, small integers): the first maximum of a window gets it, as in lax."""
  rng = np.random.default_rng(0)
  x = np.maximum(rng.integers(-2, 3, size=shape), 0).astype(np.float32)
  y = ops.max_pool(x, window, padding=padding)
  (ct,) = arrays(1, y.shape)
  f = jax.jit(lambda a, c: (jax.vjp(lambda b: ops.max_pool(b, window, padding=padding), a)[1](c),
                            jax.vjp(lambda b: ops.max_pool_lax(b, window, padding=padding), a)[1](c)))
  ours, lax_grad = f(x, ct)
  chex.assert_trees_all_close(ours, lax_grad, atol=0, rtol=0)


def test_same_padding_hand_example():
  x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)   # [[1,2,3],[4,5,6],[7,8,9]]
  # SAME, 2x2/2 on 3x3: one pad row/column after. Averages count only real elements.
  avg = ops.avg_pool(x, 2, padding="SAME")
  chex.assert_trees_all_close(np.asarray(avg)[0, :, :, 0], np.array([[3.0, 4.5], [7.5, 9.0]]), atol=1e-6, rtol=0)
  mx = ops.max_pool(-x, 2, padding="SAME")                      # pads are -inf, not 0
  chex.assert_trees_all_close(np.asarray(mx)[0, :, :, 0], -np.array([[1.0, 3.0], [7.0, 9.0]]), atol=0, rtol=0)
  # window 3, stride 2, SAME: output 2x2, pads (1, 1).
  avg3 = ops.avg_pool(x, 3, stride=2, padding="SAME")
  chex.assert_trees_all_close(np.asarray(avg3)[0, :, :, 0], np.array([[3.0, 4.0], [6.0, 7.0]]), atol=1e-6, rtol=0)


def test_max_unpool_roundtrip():
  """Un-max-pooling (U-Net talk): maxima go back where they came from, zeros elsewhere."""
  (x,) = arrays(2, (2, 6, 4, 3))
  x = np.abs(x) + 0.1
  y, idx, up, repooled = jax.jit(lambda a: (lambda y, i: (y, i, ops.max_unpool(y, i, a.shape[1:-1]),
                                                         ops.max_pool(ops.max_unpool(y, i, a.shape[1:-1]), 2)))(
      *ops.max_pool_with_argmax(a, 2)))(x)
  up = np.asarray(up)
  assert up.shape == x.shape
  np.testing.assert_array_equal(up[up != 0], x[up != 0])          # kept values are the input's
  assert (up != 0).sum() == y.size                                 # one per window
  chex.assert_trees_all_close(repooled, y, atol=0, rtol=0)


class PoolVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_max_and_avg_pool(self):
    (x,) = arrays(3, (1, 5, 6, 2))
    fn = self.variant(lambda a: (ops.max_pool(a, 2, padding="SAME"), ops.avg_pool(a, (3, 2), stride=(1, 2))))
    mx, avg = fn(x)
    chex.assert_trees_all_close(np.asarray(mx), reference.max_pool(x, 2, padding="SAME"), **TOL)
    chex.assert_trees_all_close(np.asarray(avg), reference.avg_pool(x, (3, 2), stride=(1, 2)), **TOL)


@pytest.mark.parametrize("shape,kw,match", [
  ((1, 4, 4, 1), dict(window=0), "window"),
  ((1, 4, 4, 1), dict(window=(2, 2, 2)), "window"),
  ((1, 4, 4, 1), dict(window=2, padding="full"), "padding"),
  ((1, 2, 4, 1), dict(window=3, padding="VALID"), "does not fit"),
  ((4, 4), dict(window=2), "spatial"),
])
def test_bad_arguments_raise_config_error(shape, kw, match):
  window = kw.pop("window")
  with pytest.raises(ConfigError, match=match):
    ops.max_pool(jnp.zeros(shape), window, **kw)
