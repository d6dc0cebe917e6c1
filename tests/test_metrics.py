"""Tests of jaxseg.metrics against NumPy loops and hand-computed values."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics
from jaxseg import _reference_losses as ref
from jaxseg.errors import UserError

TOL = dict(atol=1e-6, rtol=1e-6)
SHAPES = {"2d": (3, 5, 6), "3d": (2, 3, 4, 3)}


def _random(shape, c, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal(shape + (c,)).astype(np.float32)
  labels = rng.integers(0, max(c, 2), size=shape).astype(np.int32)
  return logits, labels


def _cases():
  return [(f"{dims}_c{c}", SHAPES[dims], c) for dims in SHAPES for c in (1, 2, 4)]


def _logits_for(pred, c=2):
  """Logits whose argmax (C == 1: sign) is the integer map ``pred``."""
  pred = np.asarray(pred)
  if c == 1:
    return np.where(pred == 1, 2.0, -2.0)[..., None].astype(np.float32)
  return np.eye(c, dtype=np.float32)[pred] * 3.0


@functools.partial(jax.jit, static_argnames=("empty",))
def _all_metrics(logits, labels, empty):
  # One compile per shape for the whole set of metrics.
  return dict(
      dice=metrics.dice_coef(logits, labels),
      dice_s0=metrics.dice_coef(logits, labels, smooth=0.5),
      iou=metrics.iou(logits, labels),
      acc=metrics.pixel_accuracy(logits, labels),
      per_class=metrics.per_class_dice(logits, labels, empty=empty),
  )


class AgainstReferenceTest(parameterized.TestCase):

  @parameterized.named_parameters(*_cases())
  def test_metrics(self, shape, c):
    logits, labels = _random(shape, c, seed=1)
    got = _all_metrics(logits, labels, "one")
    want = dict(
        dice=ref.dice_coef(logits, labels),
        dice_s0=ref.dice_coef(logits, labels, smooth=0.5),
        iou=ref.iou(logits, labels),
        acc=ref.pixel_accuracy(logits, labels),
        per_class=ref.per_class_dice(logits, labels, empty="one"),
    )
    chex.assert_trees_all_close(got, jax.tree.map(np.float32, want), **TOL)

  def test_per_class_ignore_has_nan_where_reference_has(self):
    # C = 4 logits but labels and predictions use only classes 0, 1.
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 2, size=(2, 4, 4))
    labels = rng.integers(0, 2, size=(2, 4, 4)).astype(np.int32)
    logits = _logits_for(pred, 4)
    got = _all_metrics(logits, labels, "ignore")["per_class"]
    want = ref.per_class_dice(logits, labels, empty="ignore")
    np.testing.assert_array_equal(np.isnan(got), [False, False, True, True])
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-6)


class VariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("dice", metrics.dice_coef, ref.dice_coef),
      ("iou", metrics.iou, ref.iou),
      ("accuracy", metrics.pixel_accuracy, ref.pixel_accuracy),
  )
  def test_jit_and_eager_agree(self, fn, ref_fn):
    logits, labels = _random((2, 4, 5), 2, seed=3)
    chex.assert_trees_all_close(self.variant(fn)(logits, labels),
                                np.float32(ref_fn(logits, labels)), **TOL)


class HandComputedTest(parameterized.TestCase):

  # pred fg at (0,0), (0,1); label fg at (0,1), (1,1)
  PRED = [[[1, 1], [0, 0]]]
  LABEL = [[[0, 1], [0, 1]]]

  @parameterized.parameters(1, 2, 3)
  def test_2x2(self, c):
    logits, labels = _logits_for(self.PRED, c), np.array(self.LABEL, np.int32)
    # |A∩B| = 1, |A| = 2, |B| = 2, |A∪B| = 3
    np.testing.assert_allclose(metrics.dice_coef(logits, labels), (2 + 1) / (4 + 1), rtol=1e-6)
    np.testing.assert_allclose(metrics.dice_coef(logits, labels, smooth=0.0), 0.5, rtol=1e-6)
    np.testing.assert_allclose(metrics.iou(logits, labels), (1 + 1) / (3 + 1), rtol=1e-6)
    np.testing.assert_allclose(metrics.iou(logits, labels, smooth=0.0), 1 / 3, rtol=1e-6)
    # right at (0,1) and (1,0)
    np.testing.assert_allclose(metrics.pixel_accuracy(logits, labels), 0.5, rtol=1e-6)

  def test_per_image_then_batch_mean(self):
    # image 0: perfect (2|A∩B| = 2, |A|+|B| = 2) -> (2+1)/(2+1) = 1
    # image 1: one predicted pixel, three labelled, disjoint -> (0+1)/(4+1)
    pred = [[[1, 0], [0, 0]], [[1, 0], [0, 0]]]
    labels = np.array([[[1, 0], [0, 0]], [[0, 1], [1, 1]]], np.int32)
    np.testing.assert_allclose(metrics.dice_coef(_logits_for(pred), labels),
                               (1.0 + 1 / 5) / 2, rtol=1e-6)

  def test_sigmoid_threshold_is_strict(self):
    # logit exactly 0 counts as background.
    logits = np.array([[[0.0], [1e-3]]], np.float32)
    labels = np.array([[1, 1]], np.int32)
    inter, a, b = metrics.dice_counts(logits, labels)
    np.testing.assert_array_equal([inter[0], a[0], b[0]], [1, 1, 2])

  def test_lab_all_background_predictor(self):
    # The lab's trap: predicting notLV everywhere on 1-3% foreground masks.
    n_fg = [41, 82, 120]                      # of 64 * 64 = 4096 pixels: 1%, 2%, 2.9%
    labels = np.zeros((3, 64, 64), np.int32)
    for i, k in enumerate(n_fg):
      labels[i].reshape(-1)[:k] = 1
    logits = _logits_for(np.zeros_like(labels))
    np.testing.assert_allclose(metrics.pixel_accuracy(logits, labels),
                               1 - sum(n_fg) / (3 * 4096), rtol=1e-6)
    want_dice = np.mean([1 / (k + 1) for k in n_fg])  # smooth / (|B| + smooth)
    np.testing.assert_allclose(metrics.dice_coef(logits, labels), want_dice, rtol=1e-6)
    self.assertLess(float(metrics.dice_coef(logits, labels)), 0.03)

  def test_empty_image_scores_one(self):
    labels = np.zeros((1, 3, 3), np.int32)
    logits = _logits_for(labels)
    np.testing.assert_allclose(metrics.dice_coef(logits, labels), 1.0)
    np.testing.assert_allclose(metrics.iou(logits, labels), 1.0)

  def test_per_class_empty_modes(self):
    # classes 0, 1 present; class 2 absent from prediction and labels.
    pred = [[[0, 1], [1, 1]]]
    labels = np.array([[[0, 0], [1, 1]]], np.int32)
    logits = _logits_for(pred, 3)
    # class 0: A={(0,0)}, B={(0,0),(0,1)} -> 2*1/3; class 1: 2*2/5
    ignore = metrics.per_class_dice(logits, labels, empty="ignore")
    np.testing.assert_allclose(ignore[:2], [2 / 3, 4 / 5], rtol=1e-6)
    self.assertTrue(np.isnan(ignore[2]))
    one = metrics.per_class_dice(logits, labels, empty="one")
    np.testing.assert_allclose(one, [2 / 3, 4 / 5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(metrics.mean_dice(ignore), 4 / 5, rtol=1e-6)
    np.testing.assert_allclose(metrics.mean_dice(one), (4 / 5 + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(metrics.mean_dice(ignore, include_background=True),
                               (2 / 3 + 4 / 5) / 2, rtol=1e-6)

  def test_per_class_num_classes(self):
    logits = _logits_for([[[0, 1]]], 1)
    got = metrics.per_class_dice(logits, np.array([[[0, 1]]], np.int32), num_classes=3)
    np.testing.assert_allclose(got[:2], [1.0, 1.0])
    self.assertTrue(np.isnan(got[2]))

  def test_counts_accumulate_over_batches(self):
    logits, labels = _random((6, 4, 4), 2, seed=4)
    parts = [metrics.dice_counts(logits[i:i + 2], labels[i:i + 2]) for i in (0, 2, 4)]
    inter, a, b = (np.concatenate(x) for x in zip(*parts))
    self.assertEqual(inter.shape, (6,))
    np.testing.assert_allclose(metrics.dice_from_counts(inter, a, b),
                               ref.dice_coef(logits, labels), rtol=1e-6)

  def test_shape_mismatch(self):
    with pytest.raises(UserError, match="shape"):
      metrics.dice_coef(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 3), np.int32))

  def test_bad_empty(self):
    with pytest.raises(UserError, match="empty"):
      metrics.per_class_dice(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2), np.int32),
                             empty="zero")


class PmapTest(chex.TestCase):

  @chex.variants(with_pmap=True)
  def test_counts_per_device_give_global_dice(self):
    # Each device counts its own images; the host combines them.
    n = jax.local_device_count()
    logits, labels = _random((n, 2, 4, 4), 2, seed=5)
    counts = self.variant(metrics.dice_counts, broadcast_args_to_devices=False,
                          reduce_fn=None)(logits, labels)
    inter, a, b = (np.asarray(x).reshape(-1) for x in counts)
    np.testing.assert_allclose(
        metrics.dice_from_counts(inter, a, b),
        ref.dice_coef(logits.reshape(-1, 4, 4, 2), labels.reshape(-1, 4, 4)), rtol=1e-6)
