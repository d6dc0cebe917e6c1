"""Validation on whole cases by sliding windows: the val metrics of patch-trained runs.

A model trained on patches sees each validation case (a volume, or a 2-D
image larger than the patch) whole: :func:`jaxseg.inference.sliding_window`
with windows of the training patch, overlap 0.5 and Gaussian blending gives
logits for every voxel, and the metrics are computed per case, then averaged
over cases:

- ``val_dice_per_class``: the lab's hard Dice per case and foreground class,
  ``(2|A∩B| + 1) / (|A| + |B| + 1)`` over the whole case (not per slice);
  ``val_dice`` their mean over classes (with two classes: class 1's);
- ``val_accuracy``: the fraction of the case's voxels classified right;
- ``val_loss``: the training loss of the blended logits of the whole case.

Cases of different sizes count equally, as images do in the 2-D metrics.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import numpy as np

OVERLAP = 0.5


def hard_classes(logits: np.ndarray) -> np.ndarray:
  """argmax over the class axis (one logit: > 0)."""
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(np.int32)
  return logits.argmax(-1).astype(np.int32)


def case_dice(pred: np.ndarray, label: np.ndarray, num_classes: int, *, smooth: float = 1.0) -> dict[str, float]:
  """The lab's hard Dice of each foreground class over a whole case: ``{"1": d, ...}``."""
  out = {}
  for c in range(1, max(int(num_classes), 2)):
    a, b = pred == c, label == c
    out[str(c)] = float((2 * np.count_nonzero(a & b) + smooth) / (np.count_nonzero(a) + np.count_nonzero(b) + smooth))
  return out


def model_windows(model) -> Callable:
  """``params -> (windows -> logits)``: the model's inference function for
  :func:`jaxseg.inference.sliding_window`, jitted once (params are an argument,
  so new weights do not recompile)."""
  import jax
  forward = jax.jit(lambda params, x: model.apply({"params": params}, x, train=False))
  return lambda params: functools.partial(forward, params)


def evaluate_cases(apply: Callable, cases: Iterable, *, window, loss_fn, num_classes: int,
                   overlap: float = OVERLAP, batch_size: int = 2, sample: bool = False,
                   mirror: bool = False) -> dict:
  """Mean loss, accuracy and Dice over whole cases, each segmented by sliding windows.

  Args:
    apply: windows ``(B, *window, C)`` -> logits ``(B, *window, K)``.
    cases: ``(name, image (*spatial, C), label (*spatial))`` triples, read
      one at a time.
    window: the training patch.
    loss_fn: ``(logits, labels) -> scalar``, jitted here (once per case shape).
    num_classes: classes including background.
    overlap: the windows' overlap (a fraction of the window).
    mirror: average the logits over every flip of the spatial axes.
    sample: also return the first case with foreground (else the first):
      ``"sample": (name, image, label, prediction)`` for the run's figures.

  Returns:
    ``val_loss``, ``val_accuracy``, ``val_dice``, ``val_dice_per_class``,
    ``val_cases`` (and ``sample``).
  """
  import jax
  from jaxseg.inference import sliding_window
  loss_jit = jax.jit(loss_fn)
  losses, accuracies, dices = [], [], []
  kept = None
  for name, image, label in cases:
    logits = sliding_window(apply, image[None], window=window, overlap=overlap, batch_size=batch_size,
                            output="logits", mirror_axes=tuple(range(image.ndim - 1)) if mirror else ())
    losses.append(float(loss_jit(logits, label[None])))
    pred = hard_classes(logits[0])
    accuracies.append(float(np.mean(pred == label)))
    dices.append(case_dice(pred, label, max(num_classes, logits.shape[-1])))
    if sample and (kept is None or (not kept[2].any() and label.any())):
      kept = (name, image, label, pred)
  if not losses:
    from jaxseg.errors import DataError
    raise DataError("no validation cases")
  per_class = {c: float(np.mean([d[c] for d in dices])) for c in dices[0]}
  out = {"val_loss": float(np.mean(losses)), "val_accuracy": float(np.mean(accuracies)),
         "val_dice": float(np.mean(list(per_class.values()))), "val_dice_per_class": per_class,
         "val_cases": len(losses)}
  if sample:
    out["sample"] = kept
  return out
