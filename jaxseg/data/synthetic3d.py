"""A synthetic cardiac short-axis cine MRI *volume*: the 2-D phantom made volumetric.

Each volume is drawn from its own NumPy generator seeded by (split, index,
seed), so volume i is the same whatever the number asked for. Arrays are in
SimpleITK's NumPy order (D, H, W): axis 0 runs through the short-axis stack
from the base (above it: the left atrium) to beyond the apex, slices
``slice_mm`` apart (default 8 mm, thick slices as on cine MRI), in-plane
spacing ``320 mm / size`` (1.25 mm at 256, 5 mm at the default 64). Sizes
below are in pixels at 256 x 256 (they scale with ``size``) or in mm along z.

The body frame of `synthetic` (torso with its fat ring and muscle layer,
lungs, spine with spinal fluid, descending aorta) extends through every
slice; the lungs shrink toward the diaphragm and the liver appears below it.
The LV is a truncated ellipsoid-to-cone, different in every case:

- the cavity radius falls from ``R`` (15-23 px) at the base plane to 0 at the
  apex, ``L`` = 60-90 mm below, as ``R * (1 - t**a) ** (1 / a)`` with
  ``t`` the fraction of ``L`` and ``a`` in [1.2, 2.4] (1: a cone, 2: an
  ellipsoid); elliptic (axis ratio 0.85-1.15, any angle), its wall wobbling;
- its long axis tilts (the centre drifts up to 0.12 px per mm);
- a myocardium 6-10 px thick that also caps the apex; two papillary muscles
  (dark, inside the labelled cavity, as in `synthetic`) in the middle slices;
- the RV crescent wraps the septum from the base to ~85% of ``L``; above the
  base plane the left atrium, a bright pool with a thin wall, is *not* LV:
  the base plane must be found in 3-D context.

Then a 3-D texture of plane waves, slice-thickness partial volume (each slice
is 0.25/0.5/0.25 of the planes at -1/3, 0, +1/3 of the slice spacing; the
label is the middle plane), an in-plane blur, a smooth 3-D multiplicative bias
field, Rician noise and a random global contrast. Raw intensities are
MRI-like, 0 to ~1000, as in `synthetic`.

Label 1 is the LV cavity (papillary muscles included), about 0.35-0.8% of the
voxels of a default volume.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxseg.data.cases import Case, CaseRef
from jaxseg.data.synthetic import SPLITS, _Frame, _blur, _grid
from jaxseg.errors import DataError

FOV_MM = 320.0  # the in-plane field of view: spacing = FOV_MM / size
SLICE_MM = 8.0
DEPTH = 16
# (train, val, size): trains unet3d_small in minutes on a 2-core CPU (experiments/synthetic3d).
SPEC_DEFAULT = (48, 8, 64)
# The spec's limit: 8 GiB of float32 volumes, which a 3-D model's run writes to
# its disk cache one volume at a time (a 2-D model holds its slices in memory:
# MAX_VOXELS_IN_MEMORY).
_MAX_VOXELS = 2**31
MAX_VOXELS_IN_MEMORY = 2**28


def spacing(size: int, slice_mm: float = SLICE_MM) -> tuple[float, float, float]:
  """(z, y, x) voxel spacing in mm of a volume of in-plane ``size``."""
  return (float(slice_mm), FOV_MM / size, FOV_MM / size)


def _case(rng: np.random.Generator, size: int, depth: int, slice_mm: float) -> dict:
  """Everything random about one case, drawn once (the per-slice painter only reads it)."""
  s = size / 256.0
  u01 = rng.uniform
  c = {"s": s, "size": size}
  c["theta"] = np.deg2rad(u01(-15, 15))
  c["cx"], c["cy"] = size / 2 + u01(-24, 24) * s, size / 2 + u01(-18, 18) * s
  c["ax"], c["ay"] = u01(102, 128) * s, u01(76, 96) * s
  c["taper"] = u01(-0.08, 0.04)  # torso widens (or narrows) toward the abdomen
  c["gain"] = u01(0.75, 1.25)
  c["level"] = {
      "fat": u01(650, 850), "muscle": u01(200, 280), "tissue": u01(250, 340),
      "lung": u01(20, 60), "blood": u01(560, 800), "myo": u01(140, 230),
      "liver": u01(260, 340), "bone": u01(300, 400), "csf": u01(500, 700),
  }
  c["rv_gain"], c["aorta_gain"], c["la_gain"] = u01(0.85, 1.05), u01(0.9, 1.1), u01(0.85, 1.05)
  c["fat"] = u01(5, 12) * s
  # LV geometry along z (mm), centred in the stack with some play.
  span = depth * slice_mm
  c["L"] = u01(60, 90)
  c["z_base"] = float(np.clip(span / 2 - c["L"] / 2 + u01(-0.12, 0.12) * span,
                              slice_mm, max(slice_mm, span - c["L"])))
  c["a"] = u01(1.2, 2.4)
  c["R"] = u01(15, 23) * s
  ecc = u01(0.85, 1.15)
  c["ecc"] = (np.sqrt(ecc), 1 / np.sqrt(ecc))
  c["phi0"] = u01(0, np.pi)
  c["t"] = u01(6, 10) * s
  c["t_mm"] = c["t"] / s * 1.25  # the wall thickness in mm, for the apical cap
  c["wobble"] = (u01(0, 0.06), u01(0, 2 * np.pi), u01(0, 0.06), u01(0, 2 * np.pi))
  ax, ay, fat = c["ax"], c["ay"], c["fat"]
  epi_r = 1.07 * c["R"] * max(c["ecc"]) + c["t"]
  inner_v = ay - fat - 7 * s
  c["spine_v"] = 0.7 * ay
  c["lu"] = 0.1 * ax + u01(-16, 16) * s
  # Clipped so that the heart stays clear of the spine and inside the chest.
  lo, hi = -inner_v + 1.2 * epi_r + 4 * s, c["spine_v"] - 17 * s - epi_r
  c["lv"] = float(np.clip(-0.08 * ay + u01(-12, 12) * s, lo, hi))
  # The long axis tilts: the centre drifts (px per mm); at the apex it is still in the chest.
  dv = float(np.clip(u01(-0.12, 0.12) * s, (lo - c["lv"]) / c["L"], (hi - c["lv"]) / c["L"]))
  c["drift"] = (u01(-0.12, 0.12) * s, dv)
  c["psi"] = np.pi + u01(-0.5, 0.2)
  c["rv_axes"] = (u01(1.1, 1.45), u01(0.75, 1.0))
  c["rv_len"] = u01(0.75, 0.9)
  c["papillary"] = []
  a0 = u01(0, 2 * np.pi)
  for k in range(2):
    a = a0 if k == 0 else a0 + u01(1.4, 2.4)
    c["papillary"].append((a, u01(0.6, 0.75), u01(0.15, 0.25), u01(0.15, 0.3), u01(0.6, 0.75)))
  c["la_len"], c["la_r"] = u01(20, 35), u01(0.7, 1.0)
  c["la_shift"] = (u01(-0.3, 0.3), u01(0.2, 0.5))  # of R, toward posterior
  c["ar"] = (u01(8, 11) * s, u01(8, 11) * s)
  c["au"] = 0.14 * ax + u01(-3, 3) * s
  c["diaphragm"] = c["z_base"] + c["L"] * u01(0.7, 1.0)
  waves = []
  for _ in range(4):
    k = 2 * np.pi / (u01(12, 40) * s)  # per pixel in-plane
    a, b = u01(0, np.pi), u01(-0.5, 0.5)  # b tilts the wave out of plane
    waves.append((k, a, b, u01(0, 2 * np.pi)))
  c["waves"], c["texture"] = waves, u01(0.025, 0.05)
  c["bias"] = u01(-0.15, 0.15, size=7)
  c["sigma"] = u01(8, 25) * c["gain"]
  return c


def _radius(c: dict, z: float, extra: float = 0.0) -> float:
  """LV cavity radius at depth z (mm); ``extra`` (mm) lengthens it (the epicardial cap)."""
  t = (z - c["z_base"]) / (c["L"] + extra)
  if t < 0 or t >= 1:
    return 0.0
  return float((1 - t ** c["a"]) ** (1 / c["a"]))


def _paint(c: dict, z: float):
  """One plane at depth z (mm): the noiseless image (no texture, blur, bias) and its masks."""
  size, s, lvl = c["size"], c["s"], c["level"]
  frame = _Frame(size, c["cx"], c["cy"], c["theta"])
  ell = frame.ellipse
  grow = 1 + c["taper"] * (z - c["z_base"]) / 100.0
  ax, ay, fat = c["ax"] * grow, c["ay"] * grow, c["fat"]
  img = np.zeros((size, size), np.float32)
  body = ell(0, 0, ax, ay)
  img[body] = lvl["fat"]
  img[ell(0, 0, ax - fat, ay - fat)] = lvl["muscle"]
  inner = ell(0, 0, ax - fat - 7 * s, ay - fat - 7 * s)
  img[inner] = lvl["tissue"]

  # Below the diaphragm the liver fills the patient's right; the lungs end.
  below = z - c["diaphragm"]
  liver = np.zeros_like(body)
  if below > -15:
    grow_l = min(1.0, (below + 15) / 40)
    liver = inner & ell(-0.4 * ax, 0.2 * ay, 0.55 * ax * grow_l + 1e-3, 0.6 * ay * grow_l + 1e-3)
    img[liver] = lvl["liver"]

  du, dv = c["drift"]
  lu, lv = c["lu"] + du * (z - c["z_base"]), c["lv"] + dv * (z - c["z_base"])
  rs = _radius(c, z)
  rs_epi = _radius(c, z, extra=c["t_mm"])
  R, t = c["R"], c["t"]
  rx, ry = R * c["ecc"][0], R * c["ecc"][1]
  endo = np.zeros((size, size), bool)
  epi = np.zeros((size, size), bool)
  if rs_epi > 0:
    box = frame.box(lu, lv, 1.1 * (max(rx, ry) + t))
    p, q = frame.u[box] - lu, frame.v[box] - lv
    c0, s0 = float(np.cos(c["phi0"])), float(np.sin(c["phi0"]))
    pa, qa = c0 * p + s0 * q, -s0 * p + c0 * q
    ang = np.arctan2(qa, pa)
    w = c["wobble"]
    wobble = w[0] * np.cos(2 * ang + w[1]) + w[2] * np.cos(3 * ang + w[3])
    if rs > 0:
      endo[box] = (pa / (rx * rs)) ** 2 + (qa / (ry * rs)) ** 2 <= (1 + wobble) ** 2
    ex, ey = (rx + t) * rs_epi, (ry + t) * rs_epi
    epi[box] = (pa / ex) ** 2 + (qa / ey) ** 2 <= (1 + 0.5 * wobble) ** 2

  # RV: from just above the base to rv_len of L, shrinking toward the apex.
  rv_blood = np.zeros_like(body)
  rv_outer = np.zeros_like(body)
  tr = (z - c["z_base"] + 4) / (c["rv_len"] * c["L"] + 4)
  heart = np.zeros_like(body)
  rr = R + t
  if 0 <= tr < 1:
    scale = float(np.sqrt(1 - tr ** 2))
    psi = c["psi"]
    rvc = (lu + 0.85 * rr * np.cos(psi), lv + 0.85 * rr * np.sin(psi))
    ru_, rv_ = rr * c["rv_axes"][0] * scale, rr * c["rv_axes"][1] * scale
    if min(ru_, rv_) > 0.5:
      rv_outer = ell(*rvc, ru_ + 3 * s, rv_ + 3 * s, psi + np.pi / 2)
      rv_blood = ell(*rvc, ru_, rv_, psi + np.pi / 2) & ~epi
      heart = ell((lu + rvc[0]) / 2, (lv + rvc[1]) / 2, 1.9 * rr, 1.5 * rr, psi)
  # Left atrium above the base plane: bright pool, thin wall, not labelled.
  la = np.zeros_like(body)
  la_wall = np.zeros_like(body)
  tl = (c["z_base"] - z) / c["la_len"]
  if 0 < tl < 1:
    rl = R * c["la_r"] * float(np.sqrt(1 - tl ** 2))
    if rl > 0.5:
      cu, cv = lu + c["la_shift"][0] * R, lv + c["la_shift"][1] * R
      la_wall = ell(cu, cv, rl + 2 * s, rl + 2 * s)
      la = ell(cu, cv, rl, rl)
      heart |= la_wall

  lungs = np.zeros_like(body)
  lung_scale = float(np.clip(1 - max(z - c["diaphragm"] + 20, 0) / 45, 0, 1))
  if lung_scale > 0.05:
    for side in (-1, 1):
      lungs |= ell(side * 0.5 * ax, -0.05 * ay, 0.3 * ax * lung_scale, 0.68 * ay * lung_scale,
                   side * 0.15)
    lungs &= inner & ~heart & ~rv_outer & ~epi & ~liver
    img[lungs] = lvl["lung"]

  spine_v = c["spine_v"] * grow
  img[ell(0, spine_v, 15 * s, 13 * s)] = lvl["bone"]
  img[ell(0, spine_v + 17 * s, 6 * s, 5 * s)] = lvl["csf"]
  ar_u, ar_v = c["ar"]
  au, av = c["au"], spine_v - 20 * s
  epi_r = 1.07 * max(rx, ry) + t
  gap = epi_r + max(ar_u, ar_v) + 3 * s
  if abs(av - lv) < gap:
    au = max(au, lu + float(np.sqrt(gap ** 2 - (av - lv) ** 2)))
  au = min(au, ax - fat - 7 * s - ar_u)
  aorta = ell(au, av, ar_u, ar_v) & ~epi & ~rv_outer & ~la_wall
  img[aorta] = lvl["blood"] * c["aorta_gain"]

  img[la_wall] = lvl["myo"]
  img[la] = lvl["blood"] * c["la_gain"]
  img[rv_outer & ~epi] = lvl["myo"]
  img[rv_blood] = lvl["blood"] * c["rv_gain"]
  img[epi] = lvl["myo"]
  img[endo] = lvl["blood"]
  tz = (z - c["z_base"]) / c["L"]
  for a, rad, pr, t0, t1 in c["papillary"]:
    if t0 <= tz <= t1 and rs > 0:
      r_here = R * rs
      img[endo & ell(lu + rad * r_here * np.cos(a), lv + rad * r_here * np.sin(a),
                     pr * R, pr * R)] = lvl["myo"]
  regions = {"lv": endo, "myo": epi & ~endo, "rv": rv_blood, "la": la, "aorta": aorta,
             "lungs": lungs, "liver": liver, "body": body}
  return img, regions


_PLANES = ((-1 / 3, 0.25), (0.0, 0.5), (1 / 3, 0.25))  # slice profile: offset (of spacing), weight


def phantom(rng: np.random.Generator, size: int = 64, depth: int = DEPTH,
            slice_mm: float = SLICE_MM):
  """One volume.

  Returns:
    (image, label, regions): float32 (depth, size, size) raw intensities, int32
    (depth, size, size) LV mask, and a dict of boolean (depth, size, size)
    masks of the painted structures at the slices' centre planes ('lv', 'myo',
    'rv', 'la', 'aorta', 'lungs', 'liver', 'body') for tests.
  """
  c = _case(rng, size, depth, slice_mm)
  s = c["s"]
  image = np.zeros((depth, size, size), np.float32)
  regions = {}
  ramp = np.arange(size, dtype=np.float64)
  y, x = _grid(size)
  yy, xx = (y / size) * 2 - 1, (x / size) * 2 - 1
  b = c["bias"]
  for k in range(depth):
    plane = np.zeros((size, size), np.float32)
    for offset, weight in _PLANES:
      z = (k + 0.5 + offset) * slice_mm
      img, masks = _paint(c, z)
      plane += np.float32(weight) * img
      if offset == 0.0:
        for name, m in masks.items():
          regions.setdefault(name, np.zeros((depth, size, size), bool))[k] = m
    zc = (k + 0.5) * slice_mm
    texture = np.zeros((size, size), np.float32)
    for kk, a, tilt, p0 in c["waves"]:
      # kz in rad/mm: the wave's in-plane wavelength, tilted by `tilt` out of plane.
      phase = p0 + kk * tilt * zc / (1.25 / s)
      wx, wy = kk * np.cos(a) * ramp + phase, kk * np.sin(a) * ramp
      texture += (np.outer(np.cos(wy), np.cos(wx)) - np.outer(np.sin(wy), np.sin(wx))).astype(np.float32)
    plane *= 1 + np.float32(c["texture"]) * texture
    plane = _blur(plane * np.float32(c["gain"]))
    zz = np.float32((k + 0.5) / depth * 2 - 1)
    field = np.exp((b[0] + b[3] * xx) * xx + (b[1] + b[4] * yy) * yy + b[2] * xx * yy
                   + (b[5] + b[6] * zz) * zz, dtype=np.float32)
    image[k] = plane * field
  sigma = np.float32(c["sigma"])
  n1 = rng.standard_normal(image.shape, dtype=np.float32) * sigma
  n2 = rng.standard_normal(image.shape, dtype=np.float32) * sigma
  image = np.sqrt((image + n1) ** 2 + n2 ** 2)
  return image, regions["lv"].astype(np.int32), regions


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
  # The trailing 3 keeps these streams apart from the 2-D phantom's (same split/index/seed).
  return np.random.default_rng([SPLITS[split], index, int(seed) % 2**63, 3])


def generate(count: int, *, size: int = 64, depth: int = DEPTH, slice_mm: float = SLICE_MM,
             seed: int = 0, split: str = "train"):
  """``count`` volumes of one split.

  Returns:
    (images, labels, spacing): raw float32 (N, D, H, W) images, int32
    (N, D, H, W) LV labels and the (z, y, x) voxel spacing in mm.
  """
  images = np.empty((count, depth, size, size), np.float32)
  labels = np.empty((count, depth, size, size), np.int32)
  for i in range(count):
    images[i], labels[i], _ = phantom(_rng(seed, split, i), size, depth, slice_mm)
  return images, labels, spacing(size, slice_mm)


def case(split: str, index: int, *, size: int = 64, seed: int = 0) -> Case:
  """Volume ``index`` of ``split`` as a :class:`~jaxseg.data.cases.Case` named
  ``synthetic3d-<split>-NNNN`` (raw intensities, one channel)."""
  image, label, _ = phantom(_rng(seed, split, index), size, DEPTH, SLICE_MM)
  return Case(f"synthetic3d-{split}-{index:04d}", image[..., None], label, spacing(size))


def list_cases(train: int, val: int, size: int, *, seed: int = 0) -> tuple[list[CaseRef], list[CaseRef]]:
  """(train, val) references to the volumes of a ``synthetic3d:TRAIN,VAL,SIZE`` spec, generated when read."""
  def refs(split, count):
    return [CaseRef(f"synthetic3d-{split}-{i:04d}", f"synthetic3d-{split}-{i:04d}",
                    functools.partial(case, split, i, size=size, seed=seed),
                    f"synthetic3d:{split}:{i}:{size}:{DEPTH}:{SLICE_MM}:{seed}") for i in range(count)]
  return refs("train", train), refs("val", val)


def parse_spec(spec: str) -> tuple[int, int, int]:
  """(train, val, size) of a ``synthetic3d[:TRAIN,VAL[,SIZE]]`` data spec.

  Without the colon part, `SPEC_DEFAULT`; anything malformed is a one-line
  DataError naming the spec. Volumes are `DEPTH` slices of ``size`` x ``size``.
  """
  scheme, sep, arg = spec.partition(":")
  if scheme.strip().lower() != "synthetic3d":
    raise DataError(f"data spec {spec!r}: not a synthetic3d spec")
  if not sep:
    return SPEC_DEFAULT
  parts = arg.split(",")
  try:
    if len(parts) not in (2, 3):
      raise ValueError
    numbers = [int(p.strip()) for p in parts]
  except ValueError:
    raise DataError(f"data spec {spec!r}: expected synthetic3d:TRAIN,VAL[,SIZE] with integers") from None
  train, val, size = numbers + [SPEC_DEFAULT[2]] * (3 - len(numbers))
  if train < 1 or val < 0 or not 16 <= size <= 1024:
    raise DataError(f"data spec {spec!r}: need TRAIN >= 1, VAL >= 0 and 16 <= SIZE <= 1024")
  if (train + val) * DEPTH * size * size > _MAX_VOXELS:
    raise DataError(f"data spec {spec!r}: {train + val} volumes of {DEPTH}x{size}x{size} would need "
                    f"more than {_MAX_VOXELS * 4 // 2**30} GiB")
  return train, val, size
