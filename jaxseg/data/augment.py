"""On-the-fly augmentation of one example, 2-D or 3-D, the same for image and label.

An :class:`Augment` is a frozen set of probabilities and ranges; presets
(``--augment none|light|default|heavy``) are in :data:`PRESETS`.
:func:`augment_example` draws everything from the generator it is given (the
pipeline seeds it from (seed, epoch, example)), so an example's augmentation
is a function of those three numbers only.

Spatial transforms (rotation, scaling, elastic deformation) are composed into
one map of source coordinates and sampled once with
``scipy.ndimage.map_coordinates``: linearly for the image, nearest-neighbour
for the label (labels stay integers); voxels mapped from outside get the
image's minimum per channel (the air of an MR image) and label 0. Mirroring
flips axes. Intensity transforms (brightness, contrast, gamma, Gaussian noise
and blur) change the image only. The ranges follow nnU-Net's defaults
(Isensee et al. 2021), whose probabilities are per example.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from jaxseg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Augment:
  """Probabilities (per example) and ranges of every transform.

  Rotation is in the plane of the last two axes (for a 3-D volume: about its
  first axis, which keeps thick slices apart) by up to ``max_degrees``, unless
  ``rotate_3d``: then about each of the three axes by up to
  ``max_degrees_3d`` (nnU-Net's 30 degrees for near-isotropic volumes).
  ``inplane_only`` keeps scaling and elastic deformation of a volume in the
  plane of its last two axes too (:func:`for_volumes` sets both from the
  data). ``scale`` > 1 zooms in. The elastic displacement is Gaussian with std
  ``elastic_alpha`` pixels at control points every ``elastic_grid`` pixels,
  interpolated cubically in between. ``noise`` is a range of noise std as a
  fraction of the image's std; ``contrast`` scales around the mean (keeping
  the range); ``gamma`` acts on the image rescaled to [0, 1].
  """
  p_rotate: float = 0.0
  max_degrees: float = 0.0
  rotate_3d: bool = False
  max_degrees_3d: float = 30.0
  inplane_only: bool = False
  p_scale: float = 0.0
  scale: tuple[float, float] = (1.0, 1.0)
  p_elastic: float = 0.0
  elastic_alpha: float = 0.0
  elastic_grid: int = 32
  p_mirror: float = 0.0            # per spatial axis
  p_brightness: float = 0.0
  brightness: tuple[float, float] = (1.0, 1.0)
  p_contrast: float = 0.0
  contrast: tuple[float, float] = (1.0, 1.0)
  p_gamma: float = 0.0
  gamma: tuple[float, float] = (1.0, 1.0)
  p_noise: float = 0.0
  noise: tuple[float, float] = (0.0, 0.0)
  p_blur: float = 0.0
  blur_sigma: tuple[float, float] = (0.5, 1.0)

  @property
  def is_identity(self) -> bool:
    return not any(getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith("p_"))


PRESETS = {
    "none": Augment(),
    # what `--augment` meant before: mirroring and small rotations, plus mild scaling
    "light": Augment(p_rotate=1.0, max_degrees=15.0, p_scale=0.5, scale=(0.9, 1.1), p_mirror=0.5),
    # nnU-Net's 2-D defaults, without its low-resolution simulation
    "default": Augment(p_rotate=0.2, max_degrees=180.0, p_scale=0.2, scale=(0.7, 1.4), p_mirror=0.5,
                       p_brightness=0.15, brightness=(0.75, 1.25), p_contrast=0.15, contrast=(0.75, 1.25),
                       p_gamma=0.3, gamma=(0.7, 1.5), p_noise=0.1, noise=(0.0, 0.3),
                       p_blur=0.2, blur_sigma=(0.5, 1.0)),
    "heavy": Augment(p_rotate=0.5, max_degrees=180.0, p_scale=0.5, scale=(0.65, 1.5), p_elastic=0.3,
                     elastic_alpha=4.0, elastic_grid=32, p_mirror=0.5,
                     p_brightness=0.3, brightness=(0.7, 1.3), p_contrast=0.3, contrast=(0.65, 1.5),
                     p_gamma=0.4, gamma=(0.6, 1.6), p_noise=0.2, noise=(0.0, 0.4),
                     p_blur=0.3, blur_sigma=(0.5, 1.5)),
}
NAMES = tuple(PRESETS)


def preset(name) -> Augment:
  """The named preset (an :class:`Augment` is returned as it is)."""
  if isinstance(name, Augment):
    return name
  if name not in PRESETS:
    raise ConfigError(f"--augment: unknown preset {name!r} (choose from {', '.join(NAMES)})")
  return PRESETS[name]


# Volumes are "thick-sliced" when their largest spacing is more than this many
# times their smallest, or their patch is more than ANISOTROPIC_PATCH times
# longer in-plane than deep (nnU-Net's criterion for its 2-D augmentation of 3-D data).
ANISOTROPIC_SPACING = 2.0
ANISOTROPIC_PATCH = 3.0


def is_anisotropic(spacing, patch=None) -> bool:
  """Whether volumes of ``spacing`` (z, y, x) seen through ``patch`` are augmented in-plane only."""
  thick = max(spacing) > ANISOTROPIC_SPACING * min(spacing)
  flat = patch is not None and max(patch) > ANISOTROPIC_PATCH * patch[0]
  return bool(thick or flat)


def for_volumes(cfg: Augment, spacing, patch=None) -> Augment:
  """The preset for 3-D patches of volumes of ``spacing``: thick-sliced data
  (:func:`is_anisotropic`) rotate, scale and deform in-plane only (rotation up to
  the preset's ``max_degrees`` about the first axis, as for a 2-D image); other
  volumes rotate about all three axes by up to ``max_degrees_3d``."""
  if cfg.is_identity or not cfg.p_rotate and not cfg.p_scale and not cfg.p_elastic:
    return cfg
  anisotropic = is_anisotropic(spacing, patch)
  return dataclasses.replace(cfg, rotate_3d=not anisotropic, inplane_only=anisotropic)


def _rotation(ndim: int, rng: np.random.Generator, cfg: Augment) -> np.ndarray:
  """A random rotation matrix of the spatial axes (in-plane unless rotate_3d)."""
  def plane(i, j, degrees):
    m = np.eye(ndim)
    a = math.radians(degrees)
    m[i, i] = m[j, j] = math.cos(a)
    m[i, j], m[j, i] = -math.sin(a), math.sin(a)
    return m
  if ndim == 3 and cfg.rotate_3d:
    planes, degrees = [(1, 2), (0, 1), (0, 2)], cfg.max_degrees_3d
  else:
    planes, degrees = [(ndim - 2, ndim - 1)], cfg.max_degrees
  m = np.eye(ndim)
  for i, j in planes:
    m = m @ plane(i, j, rng.uniform(-degrees, degrees))
  return m


def _elastic(shape, rng: np.random.Generator, cfg: Augment) -> np.ndarray:
  """(ndim, *shape) displacement in pixels, smooth between control points."""
  coarse = tuple(max(2, math.ceil(s / cfg.elastic_grid) + 1) for s in shape)
  out = []
  for _ in shape:
    grid = rng.normal(0.0, cfg.elastic_alpha, size=coarse)
    out.append(ndimage.zoom(grid, [s / c for s, c in zip(shape, coarse)], order=3, mode="nearest",
                            grid_mode=True))
  return np.stack([o[tuple(slice(0, s) for s in shape)] for o in out])


def spatial_map(shape, rng: np.random.Generator, cfg: Augment) -> np.ndarray | None:
  """Source coordinates (ndim, *shape) of a random rotation/scale/elastic map, or None."""
  ndim = len(shape)
  matrix = np.eye(ndim)
  changed = False
  if rng.random() < cfg.p_rotate and cfg.max_degrees:
    matrix = _rotation(ndim, rng, cfg)
    changed = True
  inplane = cfg.inplane_only and ndim == 3
  if rng.random() < cfg.p_scale and cfg.scale != (1.0, 1.0):
    factor = rng.uniform(*cfg.scale)
    matrix = matrix @ np.diag([1.0] + [1 / factor] * (ndim - 1)) if inplane else matrix / factor
    changed = True
  displacement = None
  if rng.random() < cfg.p_elastic and cfg.elastic_alpha:
    displacement = _elastic(shape, rng, cfg)
    if inplane:
      displacement[0] = 0
    changed = True
  if not changed:
    return None
  centre = (np.asarray(shape, np.float64) - 1) / 2
  grid = np.indices(shape, dtype=np.float32).reshape(ndim, -1) - centre[:, None].astype(np.float32)
  coords = (matrix.astype(np.float32) @ grid + centre[:, None].astype(np.float32)).reshape(ndim, *shape)
  if displacement is not None:
    coords += displacement.astype(np.float32)
  return coords


def augment_example(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                    cfg: Augment) -> tuple[np.ndarray, np.ndarray]:
  """One augmented (image ``(*spatial, C)`` float32, label ``(*spatial)`` int32) pair.

  The same spatial map and mirroring move image and label; the label's
  values stay in its set of classes. 2-D and 3-D alike.
  """
  image = np.asarray(image, np.float32)
  label = np.asarray(label)
  if cfg.is_identity:
    return image, label
  shape = label.shape
  coords = spatial_map(shape, rng, cfg)
  if coords is not None:
    lows = image.reshape(-1, image.shape[-1]).min(axis=0)
    image = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="constant",
                                              cval=float(lows[c]), prefilter=False)
                      for c in range(image.shape[-1])], axis=-1)
    label = ndimage.map_coordinates(label, coords, order=0, mode="constant", cval=0,
                                    prefilter=False).astype(label.dtype)
  flips = [a for a in range(len(shape)) if rng.random() < cfg.p_mirror]
  if flips:
    image, label = np.flip(image, flips), np.flip(label, flips)
  image = _intensity(image, rng, cfg)
  return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label)


def _intensity(x: np.ndarray, rng: np.random.Generator, cfg: Augment) -> np.ndarray:
  spatial = tuple(range(x.ndim - 1))
  if rng.random() < cfg.p_noise:
    std = x.std(axis=spatial, dtype=np.float64)
    sigma = rng.uniform(*cfg.noise) * std
    x = x + rng.normal(0.0, 1.0, size=x.shape).astype(np.float32) * sigma.astype(np.float32)
  if rng.random() < cfg.p_blur:
    sigma = rng.uniform(*cfg.blur_sigma)
    x = ndimage.gaussian_filter(x, [sigma] * len(spatial) + [0.0], mode="nearest")
  if rng.random() < cfg.p_brightness:
    x = x * np.float32(rng.uniform(*cfg.brightness))
  if rng.random() < cfg.p_contrast:
    factor = np.float32(rng.uniform(*cfg.contrast))
    mean = x.mean(axis=spatial, keepdims=True)
    lo, hi = x.min(axis=spatial, keepdims=True), x.max(axis=spatial, keepdims=True)
    x = np.clip((x - mean) * factor + mean, lo, hi)
  if rng.random() < cfg.p_gamma:
    g = rng.uniform(*cfg.gamma)
    lo, hi = x.min(axis=spatial, keepdims=True), x.max(axis=spatial, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    x = np.power((x - lo) / span, g) * span + lo
  return x.astype(np.float32)
