"""Tests of jaxseg.losses against NumPy loops, hand-computed values and optax."""

import functools
import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import losses
from jaxseg import _reference_losses as ref
from jaxseg.errors import ConfigError, UserError

# float32 sums over a few hundred pixels vs float64 loops.
TOL = dict(atol=1e-5, rtol=1e-5)

SHAPES = {"2d": (2, 5, 6), "3d": (2, 3, 4, 3)}


def _random(shape, c, seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.standard_normal(shape + (c,))).astype(np.float32)
  labels = rng.integers(0, max(c, 2), size=shape).astype(np.int32)
  return logits, labels


def _cases(classes=(1, 2, 4)):
  return [(f"{dims}_c{c}", SHAPES[dims], c) for dims in SHAPES for c in classes]


@jax.jit
def _all_losses_at(logits, labels, class_weights):
  # One compile per case for every loss together (compiles dominate the time).
  out = dict(
      ce=losses.softmax_cross_entropy(logits, labels),
      ce_weighted=losses.softmax_cross_entropy(logits, labels, class_weights=class_weights),
      dice=losses.dice_loss(logits, labels, smooth=0.5),
  )
  if logits.shape[-1] <= 2:
    out["wce"] = losses.weighted_cross_entropy(logits, labels, beta=4.0)
  return out


class AgainstReferenceTest(parameterized.TestCase):
  # jit vs no-jit is checked once per loss in VariantsTest.

  @parameterized.named_parameters(*_cases())
  def test_losses(self, shape, c):
    logits, labels = _random(shape, c, seed=c)
    w = np.linspace(0.5, 3.0, max(c, 2)).astype(np.float32)
    want = dict(
        ce=ref.softmax_cross_entropy(logits, labels),
        ce_weighted=ref.softmax_cross_entropy(logits, labels, class_weights=w),
        dice=ref.dice_loss(logits, labels, smooth=0.5),
    )
    if c <= 2:
      want["wce"] = ref.weighted_cross_entropy(logits, labels, beta=4.0)
    got = _all_losses_at(logits, labels, w)
    chex.assert_trees_all_close(got, jax.tree.map(np.float32, want), **TOL)


class VariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("ce", losses.softmax_cross_entropy, ref.softmax_cross_entropy, {}),
      ("ce_weighted", losses.softmax_cross_entropy, ref.softmax_cross_entropy,
       {"class_weights": np.array([0.3, 2.0], np.float32)}),
      ("wce", losses.weighted_cross_entropy, ref.weighted_cross_entropy, {"beta": 3.0}),
      ("dice", losses.dice_loss, ref.dice_loss, {"smooth": 1.0}),
      ("ce_dice", losses.dice_ce_loss, ref.dice_ce_loss, {"smooth": 1.0}),
  )
  def test_jit_and_eager_agree(self, fn, ref_fn, kwargs):
    logits, labels = _random((2, 4, 5), 2, seed=14)
    got = self.variant(functools.partial(fn, **kwargs))(logits, labels)
    chex.assert_trees_all_close(got, ref_fn(logits, labels, **kwargs), **TOL)


class HandComputedTest(parameterized.TestCase):

  @parameterized.parameters(3, 5)
  def test_ce_uniform_logits_is_log_c(self, c):
    logits = jnp.zeros((1, 2, 2, c))
    labels = jnp.array([[[0, 1], [c - 1, 0]]])
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels),
                               math.log(c), rtol=1e-6)

  def test_ce_two_pixels_weighted(self):
    # pixel 0: logits (0, ln 3), label 1 -> p = 3/4, ce = ln(4/3)
    # pixel 1: logits (0, 0),    label 0 -> p = 1/2, ce = ln 2
    logits = jnp.array([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    labels = jnp.array([[1, 0]])
    a, b = math.log(4 / 3), math.log(2.0)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels),
                               (a + b) / 2, rtol=1e-6)
    # weights (w0, w1) = (2, 6): (6 a + 2 b) / (6 + 2)
    got = losses.softmax_cross_entropy(logits, labels, class_weights=[2.0, 6.0])
    np.testing.assert_allclose(got, (6 * a + 2 * b) / 8, rtol=1e-6)

  def test_class_weights_ones_equal_unweighted_and_scale_free(self):
    logits, labels = _random((3, 4, 5), 3, seed=5)
    ce = jax.jit(losses.softmax_cross_entropy)
    unweighted = ce(logits, labels)
    chex.assert_trees_all_close(ce(logits, labels, class_weights=jnp.ones(3)),
                                unweighted, atol=1e-7, rtol=1e-6)
    w = np.array([1.0, 7.0, 0.5], np.float32)
    chex.assert_trees_all_close(ce(logits, labels, class_weights=w),
                                ce(logits, labels, class_weights=10 * w),
                                atol=1e-7, rtol=1e-5)
    self.assertGreater(abs(float(ce(logits, labels, class_weights=w)) - float(unweighted)), 1e-3)

  def test_wce_sigmoid_hand(self):
    # logit 0 -> every pixel costs ln 2, positives beta * ln 2.
    logits = jnp.zeros((1, 2, 1))
    labels = jnp.array([[1, 0]])
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(logits, labels, beta=4.0),
        (4 + 1) * math.log(2) / 2, rtol=1e-6)

  def test_wce_two_class_uses_log_odds(self):
    # (z0, z1) = (1, 3): log-odds 2, same as a single logit 2.
    two = jnp.array([[[1.0, 3.0], [0.5, -1.0]]])
    one = jnp.array([[[2.0], [-1.5]]])
    labels = jnp.array([[1, 1]])
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(two, labels, beta=3.0),
        losses.weighted_cross_entropy(one, labels, beta=3.0), rtol=1e-6)

  @parameterized.parameters(1, 2)
  def test_wce_beta_one_is_ce(self, c):
    logits, labels = _random((2, 4, 4), c, seed=7)
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(logits, labels, beta=1.0),
        losses.softmax_cross_entropy(logits, labels), rtol=1e-5)

  def test_dice_loss_2x2_hand(self):
    # sigmoid(0) = 1/2 on 4 pixels, one foreground pixel:
    # sum p t = 1/2, sum p = 2, sum t = 1.
    logits = jnp.zeros((1, 2, 2, 1))
    labels = jnp.array([[[1, 0], [0, 0]]])
    np.testing.assert_allclose(losses.dice_loss(logits, labels),
                               1 - (2 * 0.5 + 1) / (2 + 1 + 1), rtol=1e-6)
    np.testing.assert_allclose(losses.dice_loss(logits, labels, smooth=0.0),
                               1 - 1 / 3, rtol=1e-6)
    # The same with two softmax classes of equal logits.
    np.testing.assert_allclose(losses.dice_loss(jnp.zeros((1, 2, 2, 2)), labels),
                               0.5, rtol=1e-6)

  def test_dice_loss_is_global_not_per_image(self):
    # Image 0: perfect; image 1: no foreground predicted (p ~ 0), one fg pixel.
    big = 50.0
    logits = jnp.array([[[big], [-big]], [[-big], [-big]]])  # (2, 2, 1)
    labels = jnp.array([[1, 0], [1, 0]])
    # global: sum pt = 1, sum p = 1, sum t = 2, smooth 0 -> 1 - 2/3
    np.testing.assert_allclose(losses.dice_loss(logits, labels, smooth=0.0),
                               1 / 3, rtol=1e-5)

  def test_dice_loss_multiclass_mean_of_foreground(self):
    # C = 3 with uniform probabilities 1/3 on 3 pixels labelled 0, 1, 2.
    logits = jnp.zeros((1, 3, 3))
    labels = jnp.array([[0, 1, 2]])
    # each foreground class: sum pt = 1/3, sum p = 1, sum t = 1.
    want = 1 - (2 / 3 + 1) / (2 + 1)
    np.testing.assert_allclose(losses.dice_loss(logits, labels), want, rtol=1e-6)


class OptaxCrossCheckTest(parameterized.TestCase):
  """Our (2I + s)/(P + T + s) is optax's (I + s')/(P/2 + T/2 + s') at s' = s/2."""

  @parameterized.named_parameters(
      ("2d_c1", SHAPES["2d"], 1), ("2d_c2", SHAPES["2d"], 2), ("3d_c4", SHAPES["3d"], 4))
  def test_global_dice_matches_optax(self, shape, c):
    logits, labels = _random(shape, c, seed=8)
    if c == 1:
      targets = labels[..., None].astype(np.float32)
    else:
      targets = jax.nn.one_hot(labels, c)
    # Summing over the batch axis too gives the global Dice; the class mean
    # over 1..C-1 is optax's ignore_background (a no-op for C == 1).
    optax_dice = jax.jit(functools.partial(
        optax.losses.dice_loss, smooth=0.75, axis=tuple(range(len(shape))),
        ignore_background=True))
    want = optax_dice(logits, targets)
    got = losses.dice_loss(logits, labels, smooth=1.5)
    chex.assert_trees_all_close(got, want, atol=1e-6, rtol=1e-5)


def _extreme(c):
  """Logits of +-1e4, confidently right on some pixels and wrong on others."""
  rng = np.random.default_rng(10)
  labels = rng.integers(0, max(c, 2), size=(2, 4, 4)).astype(np.int32)
  pred = rng.integers(0, max(c, 2), size=(2, 4, 4))
  if c == 1:
    logits = np.where(pred == 1, 1e4, -1e4)[..., None]
  else:
    logits = np.where(np.eye(c, dtype=bool)[pred], 1e4, -1e4)
  return jnp.asarray(logits, jnp.float32), jnp.asarray(labels), pred


def _all_losses(c):
  """Names of the losses that accept C classes."""
  return [n for n in losses.LOSSES if not (n == "wce" and c > 2)]


@functools.partial(jax.jit, static_argnums=2)
def _values_and_grads(logits, labels, names):
  # One compile per class count for all the losses together.
  return {n: jax.value_and_grad(losses.get(n))(logits, labels) for n in names}


class StabilityTest(parameterized.TestCase):

  @parameterized.parameters(1, 2, 4)
  def test_extreme_logits_finite_value_and_grad(self, c):
    logits, labels, _ = _extreme(c)
    for name, (value, grad) in _values_and_grads(logits, labels, tuple(_all_losses(c))).items():
      self.assertTrue(np.isfinite(value), f"{name}: {value}")
      self.assertTrue(np.all(np.isfinite(grad)), f"{name}: grad not finite")

  @parameterized.parameters(1, 2, 4)
  def test_extreme_ce_value(self, c):
    logits, labels, pred = _extreme(c)
    # A wrong pixel costs the logit gap (1e4 - (-1e4) = 2e4; for one sigmoid
    # logit -log sigmoid(-1e4) = 1e4), a right one about exp(-gap) = 0.
    gap = 1e4 if c == 1 else 2e4
    wrong = np.mean(pred != labels)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels),
                               gap * wrong, rtol=1e-6)

  @parameterized.parameters(1, 2, 4)
  def test_empty_mask(self, c):
    logits, _ = _random((2, 4, 4), c, seed=11)
    labels = jnp.zeros((2, 4, 4), jnp.int32)
    for name, (value, grad) in _values_and_grads(logits, labels, tuple(_all_losses(c))).items():
      self.assertTrue(np.isfinite(value), f"{name}: {value}")
      self.assertTrue(np.all(np.isfinite(grad)), f"{name}: grad not finite")
      np.testing.assert_allclose(value, ref.__dict__[_REF_NAME[name]](
          logits, labels, **({"beta": 10.0} if name == "wce" else {})), rtol=1e-5)

  def test_empty_mask_dice_value(self):
    # Equal logits, C = 2: p = 1/2 on 32 pixels, no foreground.
    labels = jnp.zeros((2, 4, 4), jnp.int32)
    got = losses.dice_loss(jnp.zeros((2, 4, 4, 2)), labels)
    np.testing.assert_allclose(got, 1 - 1 / (16 + 1), rtol=1e-6)


_REF_NAME = {"ce": "softmax_cross_entropy", "wce": "weighted_cross_entropy",
             "dice": "dice_loss", "ce+dice": "dice_ce_loss"}


class GetTest(parameterized.TestCase):

  def test_names(self):
    self.assertEqual(losses.LOSSES, ("ce", "wce", "dice", "ce+dice"))

  def test_unknown_name_lists_valid(self):
    with pytest.raises(ConfigError, match="ce, wce, dice, ce\\+dice"):
      losses.get("focal")

  def test_unknown_option(self):
    with pytest.raises(ConfigError, match="gamma"):
      losses.get("dice", gamma=2.0)

  def test_bad_beta(self):
    with pytest.raises(ConfigError, match="beta"):
      losses.get("wce", beta=0.0)

  def test_wce_default_and_custom_beta(self):
    logits, labels = _random((2, 4, 4), 2, seed=12)
    np.testing.assert_allclose(
        losses.get("wce")(logits, labels),
        ref.weighted_cross_entropy(logits, labels, beta=10.0), rtol=1e-5)
    np.testing.assert_allclose(
        losses.get("wce", beta=2.5)(logits, labels),
        ref.weighted_cross_entropy(logits, labels, beta=2.5), rtol=1e-5)

  def test_functions_by_name(self):
    logits, labels = _random((2, 4, 4), 2, seed=13)
    np.testing.assert_allclose(losses.get("ce")(logits, labels),
                               ref.softmax_cross_entropy(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(losses.get("dice")(logits, labels),
                               ref.dice_loss(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(losses.get("ce+dice")(logits, labels),
                               ref.dice_ce_loss(logits, labels), rtol=1e-5)

  def test_shape_mismatch(self):
    with pytest.raises(UserError, match="shape"):
      losses.softmax_cross_entropy(jnp.zeros((2, 4, 4, 2)), jnp.zeros((2, 4, 5), int))

  def test_bad_class_weights(self):
    with pytest.raises(UserError, match="class_weights"):
      losses.softmax_cross_entropy(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), int),
                                   class_weights=[1.0, 2.0])

  def test_wce_multiclass_rejected(self):
    with pytest.raises(ConfigError, match="binary"):
      losses.weighted_cross_entropy(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), int),
                                    beta=2.0)
