"""Intensity normalisation of cases: a named scheme plus what it learnt from the training set.

Schemes (``--normalize``):

- ``zscore-foreground``: per case and channel, ``(x - mean) / std`` over the
  case's nonzero voxels (all voxels when none is nonzero), as nnU-Net does
  for MRI: the statistics describe the body, not how much air the field of
  view holds. The default for MR-like file data (``folder``, ``acdc``, ``atria``).
- ``zscore-volume``: per case and channel, over all its voxels.
- ``zscore-slice``: per 2-D slice (index of the first axis of a volume) and
  channel: what jaxseg did before, kept for old runs and comparisons.
- ``ct``: clip to the training set's [0.5, 99.5] percentiles of the
  labelled-foreground voxels, then subtract their mean and divide by their
  std (nnU-Net's CT scheme): HU values mean the same in every scan, so
  statistics are global, learnt once from the training cases.
- ``div1024``: ``x / 1024``, the DLI lab's scaling of Sunnybrook DICOM values
  (the default of ``synthetic`` and ``sunnybrook``).
- ``none``: unchanged.

A :class:`Normalization` holds the scheme and, for ``ct``, the fitted
statistics; ``to_dict``/``from_dict`` store it in a run's checkpoints so
that ``predict`` and ``evaluate`` treat new images exactly as training did.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxseg.errors import ConfigError, DataError

SCHEMES = ("zscore-foreground", "zscore-volume", "zscore-slice", "ct", "div1024", "none")
# The names of jaxseg runs before schemes were named choices.
_OLD_NAMES = {"zscore": "zscore-slice"}
CT_PERCENTILES = (0.5, 99.5)
_EPS = 1e-6


def check_scheme(name) -> str:
  """The scheme's canonical name, or ConfigError naming the flag."""
  name = _OLD_NAMES.get(name, name)
  if name not in SCHEMES:
    raise ConfigError(f"--normalize: unknown scheme {name!r} (choose from {', '.join(SCHEMES)})")
  return name


@dataclasses.dataclass(frozen=True)
class Normalization:
  """A scheme and, for ``ct``, per-channel (clip_low, clip_high, mean, std).

  Create one with :func:`fit`; apply it with :meth:`apply` to one case at a
  time (an array ``(*spatial, C)``).
  """
  scheme: str
  clip_low: tuple[float, ...] = ()
  clip_high: tuple[float, ...] = ()
  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "scheme", check_scheme(self.scheme))
    if self.scheme == "ct" and not self.mean:
      raise ConfigError("normalization 'ct' needs statistics fitted on the training set (normalize.fit)")

  def apply(self, image: np.ndarray, *, slice_axis: bool = True) -> np.ndarray:
    """One case ``(*spatial, C)`` -> float32 normalised.

    Args:
      image: a 2-D image ``(H, W, C)`` or a volume ``(D, H, W, C)``.
      slice_axis: for ``zscore-slice``, whether the first axis of a volume
        holds slices (each normalised alone); a 2-D image is one slice.
    """
    x = np.asarray(image, np.float32)
    spatial = tuple(range(x.ndim - 1))
    if self.scheme == "none":
      return x
    if self.scheme == "div1024":
      return x * np.float32(1.0 / 1024)
    if self.scheme == "zscore-volume":
      return _zscore(x, spatial)
    if self.scheme == "zscore-slice":
      return _zscore(x, spatial[1:] if slice_axis and x.ndim == 4 else spatial)
    if self.scheme == "zscore-foreground":
      mask = np.any(x != 0, axis=-1)
      if not mask.any():
        return _zscore(x, spatial)
      fg = x[mask].astype(np.float64)                  # (voxels, C)
      mean, std = fg.mean(axis=0), fg.std(axis=0)
      return ((x - mean) / np.where(std > _EPS, std, 1.0)).astype(np.float32)
    lo, hi = np.asarray(self.clip_low), np.asarray(self.clip_high)
    mean, std = np.asarray(self.mean), np.asarray(self.std)
    if lo.size != x.shape[-1]:
      raise DataError(f"image has {x.shape[-1]} channels, the ct statistics {lo.size}")
    return ((np.clip(x, lo, hi) - mean) / np.where(std > _EPS, std, 1.0)).astype(np.float32)

  def to_dict(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d) -> "Normalization":
    """From :meth:`to_dict`, or a bare scheme name as older runs stored it."""
    if d is None:
      return cls("zscore-slice")
    if isinstance(d, str):
      return cls(d)
    return cls(d["scheme"], *(tuple(float(v) for v in d.get(k, ())) for k in
                              ("clip_low", "clip_high", "mean", "std")))

  def describe(self) -> str:
    if self.scheme != "ct":
      return self.scheme
    f = lambda t: ",".join(f"{v:.4g}" for v in t)
    return f"ct (clip {f(self.clip_low)}..{f(self.clip_high)}, mean {f(self.mean)}, std {f(self.std)})"


def _zscore(x: np.ndarray, axes) -> np.ndarray:
  mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
  std = x.std(axis=axes, keepdims=True, dtype=np.float64)
  return ((x - mean) / np.where(std > _EPS, std, 1.0)).astype(np.float32)


def fit(scheme: str, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> Normalization:
  """The normalisation `scheme` with its statistics learnt from training cases.

  Only ``ct`` learns anything: the [0.5, 99.5] percentiles, mean and std of
  every training voxel labelled foreground (label > 0), per channel; with no
  foreground anywhere, of all voxels.

  Args:
    images: the training cases, each ``(*spatial, C)`` raw intensities.
    labels: their labels ``(*spatial)``.
  """
  scheme = check_scheme(scheme)
  if scheme != "ct":
    return Normalization(scheme)
  if not images:
    raise DataError("normalization 'ct': no training images to learn statistics from")
  fg = [np.asarray(x, np.float32)[np.asarray(y) > 0] for x, y in zip(images, labels)]
  voxels = np.concatenate(fg) if sum(len(v) for v in fg) else np.concatenate(
      [np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1]) for x in images])
  lo, hi = np.percentile(voxels, CT_PERCENTILES, axis=0)
  mean = voxels.mean(axis=0, dtype=np.float64)
  std = voxels.std(axis=0, dtype=np.float64)
  as_tuple = lambda a: tuple(float(v) for v in np.atleast_1d(a))
  return Normalization("ct", as_tuple(lo), as_tuple(hi), as_tuple(mean), as_tuple(std))


def fit_streaming(scheme: str, cases, *, count: int, max_voxels: int = 10**7) -> Normalization:
  """:func:`fit` over cases read one at a time (an iterable of :class:`~jaxseg.data.cases.Case`).

  For ``ct`` each case contributes at most ``max_voxels // count`` of its
  foreground voxels (drawn without replacement, seeded by its position), as
  nnU-Net gathers its intensity statistics; when every case has fewer, all
  are used and the result equals :func:`fit` on the list. Other schemes read
  nothing.
  """
  scheme = check_scheme(scheme)
  if scheme != "ct":
    return Normalization(scheme)
  per_case = max(1, int(max_voxels) // max(int(count), 1))
  fg, everything = [], []
  for i, case in enumerate(cases):
    x = np.asarray(case.image, np.float32)
    voxels = x[np.asarray(case.label) > 0]
    if len(voxels) > per_case:
      pick = np.random.default_rng([i, 6]).choice(len(voxels), per_case, replace=False)
      voxels = voxels[np.sort(pick)]
    fg.append(voxels)
    if not sum(len(v) for v in fg):  # kept only until some foreground turns up
      flat = x.reshape(-1, x.shape[-1])
      if len(flat) > per_case:
        flat = flat[np.sort(np.random.default_rng([i, 7]).choice(len(flat), per_case, replace=False))]
      everything.append(flat)
  if not fg:
    raise DataError("normalization 'ct': no training images to learn statistics from")
  return fit("ct", fg if sum(len(v) for v in fg) else everything,
             [np.ones(len(v), np.int32) for v in (fg if sum(len(v) for v in fg) else everything)])
