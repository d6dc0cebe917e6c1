"""Hard segmentation metrics: the lab's Dice, per-class Dice, IoU, accuracy.

All take ``logits`` ``(N, *spatial, C)`` and integer ``labels``
``(N, *spatial)``; the prediction is ``argmax`` over classes (``C == 1``:
``logit > 0``). Any number of spatial dims; all jit-able. With
``axis_name`` (inside `jax.pmap` / `jax.shard_map` over a batch axis) the
sums and counts are summed over the devices before dividing, so N devices
give the value of the global batch (`jaxseg._global`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxseg._global import global_mean, global_sum
from jaxseg.errors import UserError

_EMPTY = ("ignore", "one")


def _check_shapes(logits, labels, name: str) -> None:
  if logits.ndim < 2 or logits.shape[:-1] != labels.shape:
    raise UserError(
        f"{name}: logits shape {logits.shape} must be labels shape "
        f"{labels.shape} plus a class axis")


def predict_classes(logits: jax.typing.ArrayLike) -> jax.Array:
  """Hard class per pixel: argmax over the last axis (``C == 1``: logit > 0)."""
  logits = jnp.asarray(logits)
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def dice_counts(
    logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-image foreground counts ``(|A∩B|, |A|, |B|)``, each of shape ``(N,)``.

  A is the predicted foreground (class 1), B the labelled one. Concatenate
  these over batches and pass them to :func:`dice_from_counts` to get the
  Dice of a whole set without keeping the predictions.
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "dice_counts")
  a = predict_classes(logits) == 1
  b = labels == 1
  axes = tuple(range(1, labels.ndim))
  count = lambda m: jnp.sum(m, axis=axes, dtype=jnp.float32)
  return count(a & b), count(a), count(b)


def dice_from_counts(
    intersection: jax.typing.ArrayLike,
    pred_sum: jax.typing.ArrayLike,
    label_sum: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.0,
    axis_name=None,
) -> jax.Array:
  r"""Mean over images (of the global batch) of :math:`(2|A∩B| + s) / (|A| + |B| + s)`."""
  intersection = jnp.asarray(intersection, jnp.float32)
  per_image = (2.0 * intersection + smooth) / (
      jnp.asarray(pred_sum, jnp.float32) + jnp.asarray(label_sum, jnp.float32)
      + smooth)
  return global_mean(per_image, axis_name)


def dice_coef(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.0,
    axis_name=None,
) -> jax.Array:
  r"""The lab's hard Dice coefficient of the foreground (class 1).

  With :math:`A` the pixels predicted as class 1 (argmax; ``C == 1``:
  logit > 0) and :math:`B` the pixels labelled 1, per image

  .. math::
    D = \frac{2|A \cap B| + s}{|A| + |B| + s}

  then the mean over the batch: exactly ``dice_coef`` of the NVIDIA DLI lab
  (``smooth=1``). An image with neither predicted nor labelled foreground
  scores 1; the all-background predictor scores :math:`s/(|B|+s)`.

  Returns:
    Scalar in ``[0, 1]``.
  """
  return dice_from_counts(*dice_counts(logits, labels), smooth=smooth, axis_name=axis_name)


def dice_coef_per_class(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: Optional[int] = None,
    smooth: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
  r"""The lab's hard Dice of every foreground class, shape ``(K - 1,)``.

  Entry ``c - 1`` is :func:`dice_coef` with class ``c`` as the foreground:
  per image :math:`(2|A_c \cap B_c| + s) / (|A_c| + |B_c| + s)`, then the mean
  over the batch. With two classes it is ``[dice_coef(logits, labels)]``;
  its mean is the reported ``val_dice`` of a run with several classes.

  Args:
    num_classes: K; defaults to ``C`` (2 for a single sigmoid logit).
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "dice_coef_per_class")
  k = num_classes if num_classes is not None else max(logits.shape[-1], 2)
  pred = predict_classes(logits)
  axes = tuple(range(1, labels.ndim))
  out = []
  for c in range(1, k):
    a, b = pred == c, labels == c
    count = lambda m: jnp.sum(m, axis=axes, dtype=jnp.float32)
    out.append(dice_from_counts(count(a & b), count(a), count(b), smooth=smooth))
  return jnp.stack(out)


def per_class_dice(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: Optional[int] = None,
    empty: str = "ignore",
    axis_name=None,
) -> jax.Array:
  r"""Hard Dice of every class, over all pixels of the batch, shape ``(K,)``.

  For class :math:`c`, :math:`D_c = 2|A_c \cap B_c| / (|A_c| + |B_c|)` with
  no smoothing, counted over the whole batch. A class absent from both the
  prediction and the labels (``|A_c| + |B_c| = 0``) is ``NaN`` with
  ``empty="ignore"`` (use ``jnp.nanmean`` to leave it out of a mean, see
  :func:`mean_dice`) or ``1.0`` with ``empty="one"``.

  Args:
    num_classes: K; defaults to ``C`` (2 for a single sigmoid logit).
    empty: ``"ignore"`` or ``"one"``.
  """
  if empty not in _EMPTY:
    raise UserError(f"empty must be one of {', '.join(_EMPTY)}, got {empty!r}")
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "per_class_dice")
  k = num_classes if num_classes is not None else max(logits.shape[-1], 2)
  classes = jnp.arange(k)
  a = (predict_classes(logits)[..., None] == classes).reshape(-1, k)
  b = (labels[..., None] == classes).reshape(-1, k)
  inter = jnp.sum(a & b, axis=0, dtype=jnp.float32)
  total = jnp.sum(a, axis=0, dtype=jnp.float32) + jnp.sum(b, axis=0, dtype=jnp.float32)
  inter, total = global_sum((inter, total), axis_name)
  fill = jnp.nan if empty == "ignore" else 1.0
  return jnp.where(total > 0, 2.0 * inter / jnp.where(total > 0, total, 1.0), fill)


def mean_dice(per_class: jax.typing.ArrayLike, *, include_background: bool = False) -> jax.Array:
  """Mean of :func:`per_class_dice` values, skipping NaN (ignored) classes.

  Class 0 (background) is left out unless ``include_background``. NaN if
  every class was ignored.
  """
  per_class = jnp.asarray(per_class)
  if not include_background:
    per_class = per_class[1:]
  return jnp.nanmean(per_class)


def iou(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.0,
    axis_name=None,
) -> jax.Array:
  r"""Foreground intersection over union (Jaccard), per image, batch mean.

  Same conventions as :func:`dice_coef`: per image
  :math:`(|A \cap B| + s) / (|A \cup B| + s)` with
  :math:`|A \cup B| = |A| + |B| - |A \cap B|`, then the mean over the batch.
  """
  inter, a, b = dice_counts(logits, labels)
  return global_mean((inter + smooth) / (a + b - inter + smooth), axis_name)


def pixel_accuracy(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *,
                   axis_name=None) -> jax.Array:
  """Fraction of all pixels in the batch whose predicted class is the label.

  Keras' ``'accuracy'`` metric of the lab. Note that predicting background
  everywhere scores ``1 - foreground fraction`` (about 0.97-0.99 on the lab's
  data): use :func:`dice_coef` to judge segmentations.
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "pixel_accuracy")
  return global_mean((predict_classes(logits) == labels).astype(jnp.float32), axis_name)
