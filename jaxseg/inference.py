"""Sliding-window inference with Gaussian blending, for 2-D images and 3-D volumes.

As nnU-Net (Isensee et al. 2021, ``predict_sliding_window_return_logits``)
and MONAI's ``sliding_window_inference`` do it:

- the model sees only windows of its training size; an input smaller than
  the window is padded (centred, with ``pad_value``) and the result cropped;
- windows overlap by ``overlap`` (0.5: half a window) and are placed so the
  first starts at 0 and the last ends at the border, evenly in between
  (`window_starts`), so any input size works, not only multiples of a stride;
- each window's logits are weighted by a Gaussian importance map (sigma =
  1/8 of the window, nnU-Net's), which trusts window centres over window
  edges where the model saw less context, and the weighted sum is divided by
  the sum of the weights: no seams, and a model whose output does not depend
  on context gives exactly its own output everywhere;
- windows run through the model in batches of ``batch_size``, so the
  model's memory is bounded by the window batch, not by the input; only the
  output accumulators have the input's size;
- optional test-time mirroring averages the logits over every combination of
  flips of ``mirror_axes`` (2**k passes).

The model is any function from a batch of windows ``(B, *window, C)`` to
logits ``(B, *window, K)``, so this module knows nothing of models or data.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

from jaxseg.errors import ConfigError, DataError

OUTPUTS = ("probabilities", "logits")


def window_starts(size: int, window: int, overlap: float = 0.5) -> list[int]:
  """Start offsets of the windows along one axis of ``size`` (>= ``window``) voxels.

  nnU-Net's rule: the fewest windows whose step is at most ``window * (1 -
  overlap)``, spread evenly from 0 to ``size - window`` (rounded), so the
  last window ends exactly at the border.
  """
  if size < window:
    raise ConfigError(f"window_starts: size {size} is smaller than the window {window} (pad first)")
  if not 0 <= overlap < 1:
    raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
  if size == window:
    return [0]
  target = max(window * (1 - overlap), 1)
  count = math.ceil((size - window) / target) + 1
  step = (size - window) / (count - 1)
  return [int(np.round(step * i)) for i in range(count)]


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
  """float32 weights of shape ``window``: a Gaussian of sigma ``sigma_scale * window`` per axis.

  Centred at ``(w - 1) / 2`` (symmetric under flips, so mirroring stays a
  no-op for a flip-symmetric model) and scaled so the largest weight is 1;
  every weight is positive (exp(-8) per axis at the window's edge).
  """
  g = np.ones((), np.float64)
  for w in window:
    i = np.arange(w, dtype=np.float64)
    sigma = max(w * sigma_scale, 1e-6)
    g = np.multiply.outer(g, np.exp(-0.5 * ((i - (w - 1) / 2) / sigma) ** 2))
  g = g / g.max()
  return np.maximum(g, np.finfo(np.float32).tiny).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
  if z.shape[-1] == 1:  # one sigmoid logit
    return 1 / (1 + np.exp(-z))
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def sliding_window(fn: Callable, images, *, window: Sequence[int] | int, overlap: float = 0.5,
                   batch_size: int = 4, mirror_axes: Sequence[int] = (), sigma_scale: float = 0.125,
                   pad_value: float = 0.0, output: str = "probabilities") -> np.ndarray:
  """Class probabilities (or logits) of ``images`` from a model that sees only windows.

  Args:
    fn: batch of windows ``(B, *window, C)`` -> logits ``(B, *window, K)``
      (NumPy or JAX arrays). It is always called with exactly ``batch_size``
      windows (the last batch is filled up with copies), so a jitted model
      compiles once.
    images: ``(N, *spatial, C)`` float array, ``len(window)`` spatial axes of
      any size.
    window: the window (the model's training size), one int per spatial axis
      or one int for all.
    overlap: fraction of a window shared by neighbours along each axis, in [0, 1).
    batch_size: windows per call of ``fn``.
    mirror_axes: spatial axes (0-based) to mirror for test-time augmentation.
    sigma_scale: the Gaussian's sigma as a fraction of the window.
    pad_value: what pads an input smaller than the window.
    output: "probabilities" (softmax over classes; a sigmoid for one class)
      or "logits" (the blended logits).

  Returns:
    float32 ``(N, *spatial, K)`` at the input's size.
  """
  images = np.asarray(images)
  nd = images.ndim - 2
  if nd < 1:
    raise DataError(f"sliding_window: expected (N, *spatial, C), got shape {images.shape}")
  window = (int(window),) * nd if np.ndim(window) == 0 else tuple(int(w) for w in window)
  if len(window) != nd:
    raise DataError(f"sliding_window: a {len(window)}-D window {window} for "
                    f"{nd}-D inputs of shape {images.shape}")
  if min(window) < 1 or batch_size < 1:
    raise ConfigError(f"sliding_window: window {window} and batch_size {batch_size} must be >= 1")
  if output not in OUTPUTS:
    raise ConfigError(f"sliding_window: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
  bad_axes = [a for a in mirror_axes if not 0 <= a < nd]
  if bad_axes:
    raise ConfigError(f"sliding_window: mirror axes {bad_axes} outside 0..{nd - 1}")
  spatial = images.shape[1:-1]
  pads = [((max(w - s, 0)) // 2, max(w - s, 0) - (max(w - s, 0)) // 2) for s, w in zip(spatial, window)]
  if any(lo or hi for lo, hi in pads):
    images = np.pad(images, [(0, 0)] + pads + [(0, 0)], constant_values=pad_value)
  padded = images.shape[1:-1]
  starts = [window_starts(s, w, overlap) for s, w in zip(padded, window)]
  corners = [(n,) + c for n in range(images.shape[0]) for c in itertools.product(*starts)]
  weight = gaussian_importance(window, sigma_scale)
  flips = [tuple(a + 1 for a in combo) for k in range(len(mirror_axes) + 1)
           for combo in itertools.combinations(sorted(set(mirror_axes)), k)]

  def region(corner):
    return tuple(slice(c, c + w) for c, w in zip(corner[1:], window))

  acc = None
  for b in range(0, len(corners), batch_size):
    chunk = corners[b:b + batch_size]
    batch = np.stack([images[(c[0],) + region(c)] for c in chunk])
    if len(chunk) < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(chunk), axis=0)])
    logits = None
    for axes in flips:
      x = np.flip(batch, axes) if axes else batch
      y = np.asarray(fn(x), np.float32)
      if y.shape[:-1] != batch.shape[:-1]:
        raise DataError(f"sliding_window: the model gave shape {y.shape} for windows "
                        f"{batch.shape}; expected {batch.shape[:-1]} plus a class axis")
      y = np.flip(y, axes) if axes else y
      logits = y if logits is None else logits + y
    logits = logits / np.float32(len(flips))
    if acc is None:
      acc = np.zeros(images.shape[:-1] + (logits.shape[-1],), np.float32)
    for c, y in zip(chunk, logits):
      acc[(c[0],) + region(c)] += y * weight[..., None]
  norm = np.zeros(padded, np.float32)
  for c in itertools.product(*starts):
    norm[region((0,) + c)] += weight
  out = acc / norm[None, ..., None]
  crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, spatial))
  out = out[(slice(None),) + crop]
  return _softmax(out) if output == "probabilities" else out
