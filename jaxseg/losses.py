"""Segmentation losses: cross-entropy, weighted cross-entropy, soft Dice.

Every loss takes ``logits`` of shape ``(N, *spatial, C)`` and integer
``labels`` of shape ``(N, *spatial)`` (any number of spatial dims) and returns
a scalar. ``C == 1`` means one sigmoid logit per pixel (binary, labels 0/1);
``C >= 2`` means softmax over the last axis. All losses are pure, jit-able and
work in log space (``log_softmax`` / ``log_sigmoid``), so logits of +-1e4 give
finite values and finite gradients, and an all-background mask is fine.

Every loss takes ``axis_name=None``: inside `jax.pmap` or `jax.shard_map`
over that axis, the logits and labels are one device's slice of the batch,
and the loss sums its numerators and denominators over the axis before
dividing, so it is the loss of the global batch (`jaxseg._global`).

Pick a loss by name with :func:`get`, e.g. ``get("ce+dice")``.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxseg._global import global_mean, global_sum
from jaxseg.errors import ConfigError, UserError

LOSSES = ("ce", "wce", "dice", "ce+dice")

# Fixed default for ``get("wce")``. The lab's left-ventricle masks cover about
# 1-3% of the pixels, so the fully balancing beta would be ~30-100; 10 pushes
# towards recall without making the loss blow up on the first steps.
DEFAULT_WCE_BETA = 10.0

LossFn = Callable[[jax.typing.ArrayLike, jax.typing.ArrayLike], jax.Array]


def _check_shapes(logits: jax.Array, labels: jax.Array, name: str) -> None:
  if logits.ndim < 2 or logits.shape[:-1] != labels.shape:
    raise UserError(
        f"{name}: logits shape {logits.shape} must be labels shape "
        f"{labels.shape} plus a class axis")


def _as_float(logits: jax.typing.ArrayLike) -> jax.Array:
  logits = jnp.asarray(logits)
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _foreground_log_odds(logits: jax.Array) -> jax.Array:
  """log p(class 1) - log p(class 0) for C == 1 (the logit) or C == 2."""
  if logits.shape[-1] == 1:
    return logits[..., 0]
  return logits[..., 1] - logits[..., 0]


def softmax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    class_weights: Optional[jax.typing.ArrayLike] = None,
    axis_name=None,
) -> jax.Array:
  r"""Mean (optionally class-weighted) cross-entropy with integer labels.

  Per pixel :math:`i` with label :math:`y_i`,
  :math:`\ell_i = -\log \mathrm{softmax}(z_i)_{y_i}` (for ``C == 1``:
  :math:`\ell_i = -[y_i \log\sigma(z_i) + (1-y_i)\log\sigma(-z_i)]`), and

  .. math::
    L = \frac{\sum_i w_{y_i} \ell_i}{\sum_i w_{y_i}}

  i.e. a weighted *mean*, normalised by the total weight of the pixels
  (PyTorch's ``CrossEntropyLoss(weight=w)`` convention). With all weights 1,
  or ``class_weights=None``, this is the plain mean over all pixels, the same
  as Keras' ``SparseCategoricalCrossentropy(from_logits=True)`` used by the
  lab. Keras' ``class_weight=`` divides by the number of pixels instead, so
  its value scales with the weights; ours does not, which keeps the learning
  rate meaningful when the weights change. If every pixel has weight 0 the
  loss is 0.

  Args:
    logits: ``(N, *spatial, C)`` unnormalised scores.
    labels: ``(N, *spatial)`` integers in ``[0, C)`` (``[0, 1]`` if ``C == 1``).
    class_weights: optional ``(C,)`` weights (``(2,)`` if ``C == 1``).
    axis_name: mapped axis whose devices hold the rest of the batch: the
      weighted sum and the total weight are summed over it before dividing.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((1, 2, 2, 2))
    >>> float(softmax_cross_entropy(logits, jnp.zeros((1, 2, 2), int)))  # log 2
    0.6931...
  """
  logits, labels = _as_float(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "softmax_cross_entropy")
  num_classes = max(logits.shape[-1], 2)
  if logits.shape[-1] == 1:
    t = (labels == 1).astype(logits.dtype)
    z = logits[..., 0]
    ce = -(t * jax.nn.log_sigmoid(z) + (1.0 - t) * jax.nn.log_sigmoid(-z))
  else:
    log_p = jax.nn.log_softmax(logits, axis=-1)
    # A one-hot select rather than take_along_axis: its gradient is a select, not a
    # scatter-add (11 ms of the lab FCN's 0.6 s step at batch 8 on the CPU).
    hit = labels[..., None] == jnp.arange(logits.shape[-1], dtype=labels.dtype)
    ce = -jnp.sum(jnp.where(hit, log_p, 0.0), axis=-1)
  if class_weights is None:
    return global_mean(ce, axis_name)
  class_weights = jnp.asarray(class_weights, logits.dtype)
  if class_weights.shape != (num_classes,):
    raise UserError(f"class_weights has shape {class_weights.shape}, "
                    f"expected ({num_classes},) for {num_classes} classes")
  w = class_weights[labels]
  weighted, total = global_sum((jnp.sum(w * ce), jnp.sum(w)), axis_name)
  return weighted / jnp.where(total > 0, total, 1.0)


def weighted_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    beta: jax.typing.ArrayLike,
    axis_name=None,
) -> jax.Array:
  r"""Binary cross-entropy with weight ``beta`` on the positives (lecture 002).

  With :math:`t_i \in \{0, 1\}` the label and :math:`y_i = \sigma(x_i)` the
  predicted foreground probability,

  .. math::
    L = \frac{1}{P}\sum_i -\left(\beta\, t_i \log y_i
        + (1 - t_i) \log(1 - y_i)\right)

  averaged over all :math:`P` pixels (TensorFlow's
  ``weighted_cross_entropy_with_logits`` followed by a mean). ``beta > 1``
  reduces false negatives, ``beta < 1`` false positives; ``beta = 1`` is the
  plain binary cross-entropy. :math:`x_i` is the foreground logit for
  ``C == 1`` and the class-1 log-odds :math:`z_{i,1} - z_{i,0}` for ``C == 2``
  (so for ``beta = 1`` this equals :func:`softmax_cross_entropy`).

  Args:
    logits: ``(N, *spatial, C)`` with ``C`` 1 or 2.
    labels: ``(N, *spatial)`` in ``{0, 1}``.
    beta: weight of the positive (class 1) pixels.
    axis_name: mapped axis whose devices hold the rest of the batch.

  Returns:
    Scalar loss.
  """
  logits, labels = _as_float(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "weighted_cross_entropy")
  if logits.shape[-1] > 2:
    raise ConfigError(f"weighted cross-entropy (wce) is binary: needs 1 or 2 "
                      f"classes, got {logits.shape[-1]}")
  x = _foreground_log_odds(logits)
  t = (labels == 1).astype(logits.dtype)
  loss = -(beta * t * jax.nn.log_sigmoid(x) + (1.0 - t) * jax.nn.log_sigmoid(-x))
  return global_mean(loss, axis_name)


def _soft_dice_terms(logits: jax.Array, labels: jax.Array):
  """Probabilities and one-hot targets of the foreground classes, (..., K)."""
  c = logits.shape[-1]
  if c == 1:
    probs = jax.nn.sigmoid(logits)
    targets = (labels == 1)[..., None]
  else:
    probs = jax.nn.softmax(logits, axis=-1)[..., 1:]
    targets = labels[..., None] == jnp.arange(1, c)
  return probs, targets.astype(logits.dtype)


def dice_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.0,
    axis_name=None,
) -> jax.Array:
  r"""Soft Dice loss, global over all pixels of the batch.

  With :math:`p_i` the predicted probability of the foreground class and
  :math:`t_i \in \{0,1\}` the target, summed over every pixel of every image
  in the batch (the lecture's "global Dice loss"),

  .. math::
    L = 1 - \frac{2 \sum_i p_i t_i + s}{\sum_i p_i + \sum_i t_i + s}

  Foreground is class 1: ``sigmoid`` of the logit for ``C == 1``, softmax
  probability of class 1 for ``C == 2``. For ``C > 2`` the loss is the mean
  of this over the foreground classes ``1..C-1`` (background class 0 is left
  out). An empty mask gives ``1 - s / (sum_i p_i + s)``: finite, and pushing
  the predicted foreground towards 0.

  This equals ``optax.losses.dice_loss(logits, one_hot(labels),
  smooth=s / 2, axis=<batch and spatial axes>, ignore_background=True)``
  (optax's smooth enters numerator and denominator at half weight).

  Args:
    logits: ``(N, *spatial, C)``.
    labels: ``(N, *spatial)`` integers.
    smooth: additive smoothing :math:`s` in numerator and denominator.
    axis_name: mapped axis whose devices hold the rest of the batch: the
      per-class intersections and totals are summed over it, so the sums run
      over every pixel of the global batch.

  Returns:
    Scalar loss in ``[0, 1]``.
  """
  logits, labels = _as_float(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "dice_loss")
  probs, targets = _soft_dice_terms(logits, labels)
  axes = tuple(range(probs.ndim - 1))
  inter = jnp.sum(probs * targets, axis=axes)
  total = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  inter, total = global_sum((inter, total), axis_name)
  return jnp.mean(1.0 - (2.0 * inter + smooth) / (total + smooth))


def dice_ce_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.0,
    class_weights: Optional[jax.typing.ArrayLike] = None,
    axis_name=None,
) -> jax.Array:
  r"""Cross-entropy (per pixel) plus soft Dice (global), unweighted sum.

  .. math::
    L = L_\mathrm{CE}(\text{class\_weights}) + L_\mathrm{Dice}(s)

  See :func:`softmax_cross_entropy` and :func:`dice_loss`.
  """
  return (softmax_cross_entropy(logits, labels, class_weights=class_weights, axis_name=axis_name)
          + dice_loss(logits, labels, smooth=smooth, axis_name=axis_name))


def fused_losses(logits, labels, *, smooth=1.0, axis_name=None):
  """(ce, dice) from one pass of the Pallas kernel `kernels.fused_loss.fused_ce_dice`.

  The same values as :func:`softmax_cross_entropy` (unweighted) and
  :func:`dice_loss`, with their gradients, but the logits are read once: the
  kernel yields the mean CE and the per-class Dice sums (intersection,
  prediction, label) of the whole batch. With ``axis_name`` the CE sum,
  pixel count and Dice sums are summed over the mapped axis first.
  """
  from kernels.fused_loss import fused_ce_dice  # the kernels ship with jaxseg
  logits, labels = _as_float(logits), jnp.asarray(labels)
  _check_shapes(logits, labels, "fused_losses")
  ce, inter, pred, label = fused_ce_dice(logits, labels)
  if axis_name is not None:
    pixels = jnp.asarray(math.prod(labels.shape), ce.dtype)
    ce_sum, pixels, inter, pred, label = global_sum((ce * pixels, pixels, inter, pred, label), axis_name)
    ce = ce_sum / pixels
  fg = slice(1, None)  # C == 1 comes back as the two classes [background, foreground]
  dice = jnp.mean(1.0 - (2.0 * inter[fg] + smooth) / (pred[fg] + label[fg] + smooth))
  return ce, dice


def _fused(name):
  def loss(logits, labels, *, smooth=1.0, axis_name=None):
    ce, dice = fused_losses(logits, labels, smooth=smooth, axis_name=axis_name)
    return {"ce": ce, "dice": dice, "ce+dice": ce + dice}[name]
  loss.__doc__ = f"{name!r} computed by the fused Pallas loss kernel."
  return loss


_BY_NAME = {
    "ce": softmax_cross_entropy,
    "wce": weighted_cross_entropy,
    "dice": dice_loss,
    "ce+dice": dice_ce_loss,
}


LOSS_IMPLS = ("xla", "pallas")


def get(name: str, *, impl: str = "xla", **kwargs) -> LossFn:
  """Returns the loss ``fn(logits, labels) -> scalar`` called ``name``.

  Names are those of :data:`LOSSES` (the ``--loss`` flag). Keyword arguments
  are bound to the loss (e.g. ``get("wce", beta=5.0)``,
  ``get("ce", class_weights=w)``), all but ``axis_name``, which the caller
  passes (the data-parallel train steps do); ``"wce"`` uses
  ``beta=DEFAULT_WCE_BETA`` (10) unless given. ``impl="pallas"`` computes
  ``"ce"``, ``"dice"`` and ``"ce+dice"`` with the fused Pallas kernel
  (:func:`fused_losses`; no class weights).

  Raises:
    ConfigError: unknown name or keyword, or ``beta <= 0``.
  """
  if name not in _BY_NAME:
    raise ConfigError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
  if impl not in LOSS_IMPLS:
    raise ConfigError(f"unknown loss impl {impl!r}; choose from {', '.join(LOSS_IMPLS)}")
  if impl == "pallas":
    if name == "wce":
      raise ConfigError("loss 'wce' has no fused Pallas kernel; use ce, dice or ce+dice")
    fn = _fused(name)
  else:
    fn = _BY_NAME[name]
  allowed = [p.name for p in inspect.signature(fn).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "axis_name"]
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ConfigError(f"loss {name!r} takes no option {', '.join(unknown)}; "
                      f"options: {', '.join(allowed)}")
  if name == "wce":
    kwargs.setdefault("beta", DEFAULT_WCE_BETA)
    if not float(kwargs["beta"]) > 0:
      raise ConfigError(f"wce beta must be > 0, got {kwargs['beta']}")
  return functools.partial(fn, **kwargs)
