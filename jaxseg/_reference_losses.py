"""NumPy loop references for the losses and metrics (tests only).

Plain loops over pixels in float64, written straight from the formulas in
:mod:`jaxseg.losses` and :mod:`jaxseg.metrics`; obviously right, never fast.
Re-exported by :mod:`jaxseg.reference`. Use tiny arrays.
"""

import math

import numpy as np

__all__ = [
    "softmax_cross_entropy", "weighted_cross_entropy", "dice_loss",
    "dice_ce_loss", "dice_coef", "per_class_dice", "iou", "pixel_accuracy",
]


def _log_sigmoid(x):
  # log(1/(1+e^-x)), written so that neither branch overflows.
  return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _log_softmax(z):
  m = max(z)
  lse = m + math.log(sum(math.exp(v - m) for v in z))
  return [v - lse for v in z]


def _pixels(labels):
  """Yields the (n, *spatial) index of every pixel."""
  return np.ndindex(*np.shape(labels))


def _fg_prob(z):
  """Foreground probabilities of one pixel's logits: list over classes 1..K."""
  if len(z) == 1:
    return [math.exp(_log_sigmoid(z[0]))]
  return [math.exp(v) for v in _log_softmax(z)[1:]]


def _predict(z):
  if len(z) == 1:
    return 1 if z[0] > 0 else 0
  return int(np.argmax(z))


def softmax_cross_entropy(logits, labels, *, class_weights=None):
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  num, den = 0.0, 0.0
  for idx in _pixels(labels):
    z, y = list(logits[idx]), int(labels[idx])
    if len(z) == 1:
      ce = -(_log_sigmoid(z[0]) if y == 1 else _log_sigmoid(-z[0]))
    else:
      ce = -_log_softmax(z)[y]
    w = 1.0 if class_weights is None else float(class_weights[y])
    num += w * ce
    den += w
  return num / den if den > 0 else 0.0


def weighted_cross_entropy(logits, labels, *, beta):
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  total, count = 0.0, 0
  for idx in _pixels(labels):
    z = logits[idx]
    x = z[0] if len(z) == 1 else z[1] - z[0]
    t = 1.0 if labels[idx] == 1 else 0.0
    total += -(beta * t * _log_sigmoid(x) + (1 - t) * _log_sigmoid(-x))
    count += 1
  return total / count


def dice_loss(logits, labels, *, smooth=1.0):
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  c = logits.shape[-1]
  fg = [1] if c == 1 else list(range(1, c))
  inter = {k: 0.0 for k in fg}
  psum = {k: 0.0 for k in fg}
  tsum = {k: 0.0 for k in fg}
  for idx in _pixels(labels):
    probs = _fg_prob(list(logits[idx]))
    for k, p in zip(fg, probs):
      t = 1.0 if labels[idx] == k else 0.0
      inter[k] += p * t
      psum[k] += p
      tsum[k] += t
  losses = [1 - (2 * inter[k] + smooth) / (psum[k] + tsum[k] + smooth) for k in fg]
  return sum(losses) / len(losses)


def dice_ce_loss(logits, labels, *, smooth=1.0, class_weights=None):
  return (softmax_cross_entropy(logits, labels, class_weights=class_weights)
          + dice_loss(logits, labels, smooth=smooth))


def _per_image_counts(logits, labels):
  logits, labels = np.asarray(logits), np.asarray(labels)
  out = []
  for n in range(labels.shape[0]):
    inter = a = b = 0
    for idx in np.ndindex(*labels.shape[1:]):
      pa = _predict(list(logits[(n,) + idx])) == 1
      pb = labels[(n,) + idx] == 1
      inter += pa and pb
      a += pa
      b += pb
    out.append((inter, a, b))
  return out


def dice_coef(logits, labels, *, smooth=1.0):
  per = [(2 * i + smooth) / (a + b + smooth) for i, a, b in _per_image_counts(logits, labels)]
  return sum(per) / len(per)


def iou(logits, labels, *, smooth=1.0):
  per = [(i + smooth) / (a + b - i + smooth) for i, a, b in _per_image_counts(logits, labels)]
  return sum(per) / len(per)


def per_class_dice(logits, labels, *, num_classes=None, empty="ignore"):
  logits, labels = np.asarray(logits), np.asarray(labels)
  k = num_classes if num_classes is not None else max(logits.shape[-1], 2)
  inter, a, b = [0] * k, [0] * k, [0] * k
  for idx in _pixels(labels):
    p, y = _predict(list(logits[idx])), int(labels[idx])
    if p < k:
      a[p] += 1
    if y < k:
      b[y] += 1
    if p == y and p < k:
      inter[p] += 1
  fill = math.nan if empty == "ignore" else 1.0
  return np.array([2 * inter[c] / (a[c] + b[c]) if a[c] + b[c] else fill
                   for c in range(k)])


def pixel_accuracy(logits, labels):
  logits, labels = np.asarray(logits), np.asarray(labels)
  hits = [_predict(list(logits[idx])) == labels[idx] for idx in _pixels(labels)]
  return sum(hits) / len(hits)
