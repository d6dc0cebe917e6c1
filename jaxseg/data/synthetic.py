"""A synthetic cardiac short-axis cine MRI slice, the default data set.

Each image is drawn from its own NumPy generator seeded by (split, index,
seed), so image i is the same whatever the number of images asked for. The
phantom is painted in a body frame that is shifted (up to +-30 px across,
+-22 px down; the body may be cut by the image edge), scaled and rotated at
random (all sizes below are for 256 x 256 and scale with ``size``):

- torso ellipse with a bright subcutaneous fat ring and a muscle layer;
- two dark lungs, optionally the liver under the right lung, the spine with
  bright spinal fluid, and the descending aorta (a bright round distractor);
- the heart, itself offset by up to +-16 / +-12 px in the body: the LV blood
  pool (bright, radius 10-22 px from apical to basal slices, slightly elliptic
  and irregular) inside a darker myocardium ring 6-10 px thick, two papillary
  muscles (dark blobs inside the pool), and the RV, a bright crescent wrapped
  around the septum;
- a smooth tissue texture, partial-volume blur, a smooth multiplicative bias
  field, Rician noise and a random global contrast.

Label 1 is the LV cavity inside the endocardium *including* the papillary
muscles (they lie inside a smooth endocardial contour, and a filled contour
is what the Sunnybrook labels are), so a model must find the contour rather
than threshold bright pixels; the RV, aorta and everything else is 0. The
LV covers about 1.3% of the pixels on average (0.5-2.3% per image), so
predicting background everywhere scores ~98.7% accuracy, as in the DLI lab.
Its centre moves by tens of pixels between images (std ~14 px down, ~20 px
across) and no pixel is LV in more than ~35-40% of them, as on real short-axis
MRI, so the best position-independent guess, a per-pixel majority vote, is
all background (Dice ~ 0), the lab's Task 1 outcome. Raw intensities are
MRI-like, 0 to ~1000; :func:`generate` returns them raw and the `synthetic`
data spec divides them by 1024 like the lab.
"""

from __future__ import annotations

import functools

import numpy as np

SPLITS = {"train": 0, "val": 1, "test": 2}


def _blur(img: np.ndarray) -> np.ndarray:
  """Separable binomial [1 4 6 4 1]/16 blur (sigma ~ 1 px), edges replicated."""
  k = np.array([1, 4, 6, 4, 1], np.float32) / 16
  for axis in (0, 1):
    p = np.pad(img, [(2, 2) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
    n = img.shape[axis]
    img = sum(k[j] * np.take(p, np.arange(j, j + n), axis=axis) for j in range(5))
  return img


class _Frame:
  """The body frame: u to the image right (patient left), v down (posterior).

  Shapes are evaluated only inside their bounding box, which keeps one
  256 x 256 phantom at a few milliseconds.
  """

  def __init__(self, size, cx, cy, theta):
    self.size, self.cx, self.cy = size, cx, cy
    # Python floats, not NumPy float64 scalars, keep the grids float32.
    self.c, self.s = float(np.cos(theta)), float(np.sin(theta))
    y, x = _grid(size)
    self.u = self.c * (x - cx) + self.s * (y - cy)
    self.v = -self.s * (x - cx) + self.c * (y - cy)

  def box(self, cu, cv, radius):
    """Slices of the pixel box holding the disc of `radius` around (cu, cv)."""
    x = self.cx + self.c * cu - self.s * cv
    y = self.cy + self.s * cu + self.c * cv
    lo = lambda t: int(np.clip(np.floor(t - radius - 1), 0, self.size))
    hi = lambda t: int(np.clip(np.ceil(t + radius + 2), 0, self.size))
    return slice(lo(y), hi(y)), slice(lo(x), hi(x))

  def ellipse(self, cu, cv, ru, rv, angle=0.0):
    """Boolean mask of an ellipse centred at (cu, cv), axes rotated by `angle`."""
    mask = np.zeros((self.size, self.size), bool)
    box = self.box(cu, cv, max(ru, rv))
    c, s = float(np.cos(angle)), float(np.sin(angle))
    du, dv = self.u[box] - cu, self.v[box] - cv
    a = (c * du + s * dv) / ru
    b = (-s * du + c * dv) / rv
    mask[box] = a * a + b * b <= 1.0
    return mask


@functools.lru_cache(maxsize=4)
def _grid(size):
  y, x = np.mgrid[0:size, 0:size].astype(np.float32)
  y.flags.writeable = x.flags.writeable = False
  return y, x


def phantom(rng: np.random.Generator, size: int = 256):
  """One slice.

  Returns:
    (image, label, regions): float32 (size, size) raw intensities, int32
    (size, size) LV mask, and a dict of boolean masks of the painted
    structures ('lv', 'myo', 'rv', 'aorta', 'lungs', 'body') for tests.
  """
  s = size / 256.0
  u01 = rng.uniform
  # Where the patient lies in the field of view varies a lot between scans
  # (the body may be cut by the image edge); together with the heart's own
  # offset below, no pixel is LV in more than ~1/4 of the images, as on real
  # short-axis MRI, so an "average position" prediction scores Dice ~ 0.
  theta = np.deg2rad(u01(-15, 15))
  cx, cy = size / 2 + u01(-30, 30) * s, size / 2 + u01(-22, 22) * s
  frame = _Frame(size, cx, cy, theta)
  ell = frame.ellipse
  ax, ay = u01(102, 128) * s, u01(76, 96) * s
  gain = u01(0.75, 1.25)
  level = {
      "fat": u01(650, 850), "muscle": u01(200, 280), "tissue": u01(250, 340),
      "lung": u01(20, 60), "blood": u01(560, 800), "myo": u01(140, 230),
      "liver": u01(260, 340), "bone": u01(300, 400), "csf": u01(500, 700),
  }
  img = np.zeros((size, size), np.float32)

  body = ell(0, 0, ax, ay)
  fat = u01(5, 12) * s
  img[body] = level["fat"]
  img[ell(0, 0, ax - fat, ay - fat)] = level["muscle"]
  inner = ell(0, 0, ax - fat - 7 * s, ay - fat - 7 * s)
  img[inner] = level["tissue"]
  liver = np.zeros_like(body)
  if u01() < 0.4:
    liver = inner & ell(-0.42 * ax, 0.35 * ay, 0.42 * ax, 0.45 * ay)
    img[liver] = level["liver"]

  # Heart: LV endocardium, myocardium, RV; placed in the body frame. The LV
  # radius spans apical (small) to basal (large) slices.
  r = u01(10, 22) * s
  ecc = u01(0.85, 1.15)
  rx, ry = r * np.sqrt(ecc), r / np.sqrt(ecc)
  phi0 = u01(0, np.pi)
  t = u01(6, 10) * s
  epi_r = 1.07 * max(rx, ry) + t  # the epicardium's reach, wobble included
  spine_v = 0.7 * ay
  inner_v = ay - fat - 7 * s
  lu = 0.1 * ax + u01(-16, 16) * s
  # Clipped so that the heart stays clear of the spine and inside the chest.
  lv = float(np.clip(-0.08 * ay + u01(-12, 12) * s,
                     -inner_v + 1.2 * epi_r + 4 * s, spine_v - 17 * s - epi_r))
  box = frame.box(lu, lv, 1.1 * (max(rx, ry) + t))
  p, q = frame.u[box] - lu, frame.v[box] - lv
  c0, s0 = float(np.cos(phi0)), float(np.sin(phi0))
  pa, qa = c0 * p + s0 * q, -s0 * p + c0 * q
  ang = np.arctan2(qa, pa)
  wobble = (u01(0, 0.06) * np.cos(2 * ang + u01(0, 2 * np.pi)) +
            u01(0, 0.06) * np.cos(3 * ang + u01(0, 2 * np.pi)))
  endo = np.zeros((size, size), bool)
  epi = np.zeros((size, size), bool)
  endo[box] = (pa / rx) ** 2 + (qa / ry) ** 2 <= (1 + wobble) ** 2
  epi[box] = (pa / (rx + t)) ** 2 + (qa / (ry + t)) ** 2 <= (1 + 0.5 * wobble) ** 2
  # RV: an ellipse beside the LV toward the patient's right (image left) and
  # anterior; the LV's epicardium bites into it, leaving a crescent.
  psi = np.pi + u01(-0.5, 0.2)
  rr = r + t
  rvc = (lu + 0.85 * rr * np.cos(psi), lv + 0.85 * rr * np.sin(psi))
  rv_ru, rv_rv = rr * u01(1.1, 1.45), rr * u01(0.75, 1.0)
  rv_outer = ell(*rvc, rv_ru + 3 * s, rv_rv + 3 * s, psi + np.pi / 2)
  rv_blood = ell(*rvc, rv_ru, rv_rv, psi + np.pi / 2) & ~epi
  heart = ell((lu + rvc[0]) / 2, (lv + rvc[1]) / 2, 1.9 * rr, 1.5 * rr, psi)

  lungs = np.zeros_like(body)
  for side in (-1, 1):
    lungs |= ell(side * 0.5 * ax, -0.05 * ay, 0.3 * ax, 0.68 * ay, side * 0.15)
  lungs &= inner & ~heart & ~rv_outer & ~epi & ~liver
  img[lungs] = level["lung"]

  # Spine (bone, bright spinal fluid behind it) and the descending aorta.
  img[ell(0, spine_v, 15 * s, 13 * s)] = level["bone"]
  img[ell(0, spine_v + 17 * s, 6 * s, 5 * s)] = level["csf"]
  # The aorta lies left-anterior of the spine, behind the heart; when the LV
  # sits low it is pushed toward the patient's left, clear of the myocardium.
  ar_u, ar_v = u01(8, 11) * s, u01(8, 11) * s
  au, av = 0.14 * ax + u01(-3, 3) * s, spine_v - 20 * s
  gap = epi_r + max(ar_u, ar_v) + 3 * s
  if abs(av - lv) < gap:
    au = max(au, lu + float(np.sqrt(gap ** 2 - (av - lv) ** 2)))
  au = min(au, ax - fat - 7 * s - ar_u)
  aorta = ell(au, av, ar_u, ar_v) & ~epi & ~rv_outer
  img[aorta] = level["blood"] * u01(0.9, 1.1)

  img[rv_outer & ~epi] = level["myo"]
  img[rv_blood] = level["blood"] * u01(0.85, 1.05)
  img[epi] = level["myo"]
  img[endo] = level["blood"]
  for k in range(2):
    a = u01(0, 2 * np.pi) if k == 0 else a + u01(1.4, 2.4)
    rad = u01(0.6, 0.75) * r
    pr = u01(0.15, 0.25) * r
    img[endo & ell(lu + rad * np.cos(a), lv + rad * np.sin(a), pr, pr)] = level["myo"]

  # Tissue texture: a smooth random field of a few plane waves, +-5-10%;
  # cos(kx x + ky y + p) is split into outer products of 1-D waves (cheap).
  ramp = np.arange(size, dtype=np.float64)
  texture = np.zeros((size, size), np.float32)
  for _ in range(4):
    k = 2 * np.pi / (u01(12, 40) * s)
    a = u01(0, np.pi)
    wx, wy = k * np.cos(a) * ramp + u01(0, 2 * np.pi), k * np.sin(a) * ramp
    texture += (np.outer(np.cos(wy), np.cos(wx)) - np.outer(np.sin(wy), np.sin(wx))).astype(np.float32)
  img *= 1 + np.float32(u01(0.025, 0.05)) * texture
  img = _blur(img * np.float32(gain))
  y, x = _grid(size)
  yy, xx = (y / size) * 2 - 1, (x / size) * 2 - 1
  c = u01(-0.15, 0.15, size=5)
  img = img * np.exp((c[0] + c[3] * xx) * xx + (c[1] + c[4] * yy) * yy + c[2] * xx * yy,
                     dtype=np.float32)
  sigma = u01(8, 25) * gain
  n1 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
  n2 = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
  img = np.sqrt((img + n1) ** 2 + n2 ** 2)

  regions = {"lv": endo, "myo": epi & ~endo, "rv": rv_blood, "aorta": aorta,
             "lungs": lungs, "body": body}
  return img, endo.astype(np.int32), regions


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([SPLITS[split], index, int(seed) % 2**63])


def generate(count: int, *, size: int = 256, seed: int = 0, split: str = "train"):
  """``count`` slices of one split: raw float32 (N, H, W) images, int32 (N, H, W) labels."""
  images = np.empty((count, size, size), np.float32)
  labels = np.empty((count, size, size), np.int32)
  for i in range(count):
    images[i], labels[i], _ = phantom(_rng(seed, split, i), size)
  return images, labels
