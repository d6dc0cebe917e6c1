"""Segment one raw case with a trained model, on the case's own grid (what `predict` writes).

The case is treated exactly as training treated its cases, then the result
is mapped back:

1. resampled to the run's ``--spacing`` if it had one (linear,
   :func:`jaxseg.data.preprocess.resample`);
2. normalised as one case with the run's stored
   :class:`~jaxseg.data.normalization.Normalization`;
3. segmented by Gaussian-blended sliding windows of the training size
   (:func:`jaxseg.inference.sliding_window`): a 3-D model sees the whole
   volume, a 2-D model each slice along the first array axis;
4. the class probabilities are resampled back to the case's grid (linear,
   so the labels' borders fall where the probabilities cross, as nnU-Net
   does) and the most probable class is taken.

`jaxseg evaluate --per-case` scores 3-D and patch-trained runs with the same
function, so it scores what `predict` writes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jaxseg.errors import DataError


def forward(model, params) -> Callable:
  """A batch of windows -> logits, jitted (compiled once for the window batch's shape)."""
  import jax
  fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
  return lambda x: fn(params, x)


def probabilities(apply: Callable, image: np.ndarray, spacing: Sequence[float], *, spatial_dims: int,
                  window: Sequence[int], normalization, target_spacing: Sequence[float] | None = None,
                  overlap: float = 0.5, batch_size: int = 8, mirror: bool = False) -> np.ndarray:
  """Class probabilities ``(*spatial, K)`` of one raw case ``image`` ``(*spatial, C)``.

  Args:
    apply: windows ``(B, *window, C)`` -> logits (e.g. :func:`forward`).
    spacing: the case's mm per array axis.
    spatial_dims: the model's (2: slices, 3: volumes).
    window: the sliding window (the training patch or image size).
    normalization: the run's :class:`~jaxseg.data.normalization.Normalization`.
    target_spacing: the run's ``--spacing`` (None: the case's own).
  """
  from jaxseg.data import preprocess
  from jaxseg.inference import sliding_window
  nd = image.ndim - 1
  if spatial_dims == 3 and nd != 3:
    raise DataError("a 2-D image, but the run's model is a 3-D model: it segments volumes")
  target = None
  if target_spacing is not None:
    target = preprocess.Preprocessing(normalization, spacing=tuple(target_spacing)).target(tuple(spacing))
  x = preprocess.resample(image, spacing, target) if target is not None else image
  x = normalization.apply(x)
  batch = x[None] if (spatial_dims == 3 or nd == 2) else x
  probs = sliding_window(apply, batch, window=window, overlap=overlap, batch_size=batch_size,
                         mirror_axes=tuple(range(spatial_dims)) if mirror else ())
  probs = probs[0] if (spatial_dims == 3 or nd == 2) else probs
  if target is not None:
    probs = preprocess.resample(probs, target, spacing, shape=image.shape[:-1])
  return probs


def labels(probs: np.ndarray) -> np.ndarray:
  """The most probable class per voxel (one output: probability > 0.5)."""
  if probs.shape[-1] == 1:
    return (probs[..., 0] > 0.5).astype(np.int32)
  return probs.argmax(-1).astype(np.int32)


def run_window(meta: dict, spatial_dims: int) -> tuple[int, ...]:
  """The sliding window of a run: its stored training patch size, else its training image size.

  Runs store ``image_shape`` (the training examples' shape, channels last);
  a run trained on patches stores ``patch_size``, which then wins.
  """
  window = meta.get("patch_size") or meta["image_shape"][:spatial_dims]
  return tuple(int(w) for w in window)
