"""Pallas max-pool and fused CE+Dice kernels against NumPy / lax, forward and gradients.

Sweep: 3 max-pool cases (2x2 VALID, 3x3/2 SAME overlapping, 3x2/1 SAME with
ties) and 2 loss cases (3-class softmax, 1-logit sigmoid).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxseg import reference
from kernels.fused_loss import LossBlockSizes, fused_ce_dice, fused_ce_dice_reference
from kernels.pool import PoolBlockSizes, max_pool_pallas, max_pool_reference

TOL = dict(atol=1e-5, rtol=1e-5)

POOL_CASES = (
    ("w2_valid", (2, 8, 8, 3), 2, None, "VALID", PoolBlockSizes(16, 4)),
    ("w3_s2_same_overlapping", (1, 7, 9, 5), 3, 2, "SAME", PoolBlockSizes(16, 4)),
    ("w3x2_s1_same_ties_default_blocks", (1, 6, 7, 2), (3, 2), 1, "SAME", None),
)


def _lax_max_pool(x, window, stride, padding):
  window = (window, window) if isinstance(window, int) else window
  stride = window if stride is None else (stride, stride) if isinstance(stride, int) else stride
  dims, strides = (1,) + window + (1,), (1,) + stride + (1,)
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides,
                               jax.lax.padtype_to_pads(x.shape, dims, strides, padding))


class PallasPoolLossTest(parameterized.TestCase):
  """Compiled kernels (needs a GPU); the subclass below runs them interpreted."""
  INTERPRET = False

  def setUp(self):
    super().setUp()
    if not self.INTERPRET and jax.default_backend() != "gpu":
      self.skipTest("compiled Pallas kernels need a GPU; see PallasPoolLossInterpretTest")
    # No dot here, but the GPU's exp/log differ from XLA:CPU's in the last bits.
    self.tol = TOL if self.INTERPRET else dict(atol=1e-4, rtol=1e-4)

  @parameterized.named_parameters(*POOL_CASES)
  def test_max_pool_forward_and_gradient(self, shape, window, stride, padding, block_sizes):
    rng = np.random.default_rng(0)
    # Values on a coarse grid, so windows hold ties: the gradient must go to the first maximum.
    x = (np.round(rng.normal(size=shape) * 2) / 2).astype(np.float32)
    want = reference.max_pool(x, window, stride=stride, padding=padding)
    ct = rng.normal(size=want.shape).astype(np.float32)
    pallas = lambda a: max_pool_pallas(a, window, stride=stride, padding=padding,
                                       block_sizes=block_sizes, interpret=self.INTERPRET)

    @jax.jit
    def run(x, ct):
      y, vjp = jax.vjp(pallas, x)
      return y, vjp(ct)[0]

    y, dx = run(x, ct)
    chex.assert_trees_all_close(np.asarray(y), want, **self.tol)
    chex.assert_trees_all_close(np.asarray(max_pool_reference(x, window, stride=stride,
                                                              padding=padding)), want, **TOL)
    _, vjp_lax = jax.vjp(lambda a: _lax_max_pool(a, window, stride, padding), x)
    chex.assert_trees_all_close(dx, vjp_lax(ct)[0], **self.tol)

  @parameterized.named_parameters(("softmax3", (2, 5, 7), 3), ("sigmoid1", (2, 8, 8), 1))
  def test_fused_ce_dice_forward_and_gradient(self, shape, c):
    rng = np.random.default_rng(c)
    logits = (rng.normal(size=shape + (c,)) * 3).astype(np.float32)
    labels = rng.integers(0, max(c, 2), shape).astype(np.int32)
    # NumPy: probabilities, one-hot targets, the four outputs.
    z = logits.reshape(-1, c).astype(np.float64)
    if c == 1:
      z = np.concatenate([np.zeros_like(z), z], 1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    t = np.eye(z.shape[1])[labels.reshape(-1)]
    want = (-np.mean(np.log((p * t).sum(1))), (p * t).sum(0), p.sum(0), t.sum(0))
    cts = (np.float32(0.7),) + tuple(rng.normal(size=w.shape).astype(np.float32) for w in want[1:])
    pallas = lambda a: fused_ce_dice(a, labels, block_sizes=LossBlockSizes(32),
                                     interpret=self.INTERPRET)

    @jax.jit
    def run(logits, cts):
      out, vjp = jax.vjp(pallas, logits)
      return out, vjp(cts)[0]

    out, grad = run(logits, cts)
    chex.assert_trees_all_close(tuple(np.asarray(o) for o in out), want, atol=1e-4, rtol=1e-5)
    _, vjp_ref = jax.vjp(lambda a: fused_ce_dice_reference(a, labels), logits)
    chex.assert_trees_all_close(grad, vjp_ref(cts)[0], **self.tol)


class PallasPoolLossInterpretTest(PallasPoolLossTest):
  INTERPRET = True


class ShapeErrorTest(parameterized.TestCase):

  def test_pool_rejects_3d(self):
    with self.assertRaisesRegex(ValueError, "2-D only"):
      max_pool_pallas(jnp.zeros((1, 4, 4, 4, 2)), 2)

  def test_pool_rejects_window_larger_than_input(self):
    with self.assertRaisesRegex(ValueError, "does not fit"):
      max_pool_pallas(jnp.zeros((1, 2, 2, 2)), 3)

  def test_pool_rejects_padding_as_large_as_window(self):
    with self.assertRaisesRegex(ValueError, "smaller than the window"):
      max_pool_pallas(jnp.zeros((1, 4, 4, 2)), 2, padding=((2, 0), (0, 0)))

  def test_loss_rejects_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, "labels.shape"):
      fused_ce_dice(jnp.zeros((2, 4, 4, 2)), jnp.zeros((2, 4, 5), jnp.int32))

  def test_loss_rejects_block_rows(self):
    with self.assertRaisesRegex(ValueError, "power of two"):
      fused_ce_dice(jnp.zeros((2, 4, 4, 2)), jnp.zeros((2, 4, 4), jnp.int32),
                    block_sizes=LossBlockSizes(48))


def test_ops_max_pool_dispatches_to_pallas():
  """`jaxseg.ops.max_pool(impl="pallas")` runs the kernel: same values and gradient as the xla impl."""
  from jaxseg import ops
  from jaxseg.errors import ConfigError
  x = jax.random.normal(jax.random.PRNGKey(3), (1, 6, 6, 4))
  g = jax.random.normal(jax.random.PRNGKey(4), (1, 3, 3, 4))
  y_x, vjp_x = jax.vjp(lambda a: ops.max_pool(a, (2, 2), padding="SAME"), x)
  y_p, vjp_p = jax.vjp(lambda a: ops.max_pool(a, (2, 2), padding="SAME", impl="pallas"), x)
  np.testing.assert_allclose(np.asarray(y_p), np.asarray(y_x), atol=0, rtol=0)
  np.testing.assert_allclose(np.asarray(vjp_p(g)[0]), np.asarray(vjp_x(g)[0]), atol=1e-6, rtol=0)
  with pytest.raises(ConfigError):
    ops.max_pool(x, (2, 2), impl="nope")


@pytest.mark.parametrize("c", [1, 2, 3])
def test_losses_get_pallas_equals_xla(c):
  """losses.get(name, impl="pallas") gives the xla losses' values and gradients."""
  from jaxseg import losses
  logits = 3.0 * jax.random.normal(jax.random.PRNGKey(c), (2, 5, 7, c))
  labels = jax.random.randint(jax.random.PRNGKey(10 + c), (2, 5, 7), 0, max(c, 2))
  for name in ("ce", "dice", "ce+dice"):
    want, g_want = jax.value_and_grad(losses.get(name))(logits, labels)
    got, g_got = jax.value_and_grad(losses.get(name, impl="pallas"))(logits, labels)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-4, atol=1e-6, err_msg=name)
