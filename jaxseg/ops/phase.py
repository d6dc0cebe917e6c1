"""Transposed convolution in stride-phase form: one stride-1 conv, then depth-to-space.

A transposed conv with stride s writes input o's contribution y[o] w[t]^T at
output o*s + t - lo. Splitting the tap t = p*s + r shows that output phase r
(outputs = r mod s, after the pad lo) only ever sees the taps r, r + s, ...:
it is a stride-1 convolution of y with q = ceil(k / s) taps. All s^nd phases
together are one stride-1 conv with q^nd taps and s^nd * C_out output
channels, followed by a reshape that interleaves the phases (depth-to-space)
and a crop. Nothing is multiplied by inserted zeros, unlike XLA's transposed
conv (a conv over the input dilated by s), which for the lab FCN's 31x31/16
upscore does 16*16 times the work; the work here is the kernel zero-padded to
q*s taps (1.07x for 31/16).

Dilation 1 only (the models' transposed convs); the conv runs through
`ops.conv.conv_lax_tuned`, so its gradients are XLA's dx and GEMM dW.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxseg.ops._common import ConvGeometry, conv_geometry


def _taps_per_phase(geo: ConvGeometry) -> list[int]:
  """q = ceil(k / s) per spatial dim: the taps each output phase sees."""
  return [-(-k // s) for k, s in zip(geo.kernel, geo.stride)]


def phase_kernel(w, geo: ConvGeometry):
  """(*k, C_out, C_in) -> (*q, C_in, prod(s) * C_out): tap p of phase r is w[(q-1-p)*s + r]."""
  nd = geo.nd
  q = _taps_per_phase(geo)
  w = lax.pad(w, jnp.zeros((), w.dtype),
              [(0, qq * s - k, 0) for k, s, qq in zip(geo.kernel, geo.stride, q)] + [(0, 0, 0)] * 2)
  shape = []
  for qq, s in zip(q, geo.stride):
    shape += [qq, s]
  w = w.reshape(shape + list(w.shape[-2:]))                    # (q1, s1, q2, s2, .., C_out, C_in)
  w = jnp.flip(w, axis=tuple(2 * j for j in range(nd)))
  perm = [2 * j for j in range(nd)] + [2 * nd + 1] + [1 + 2 * j for j in range(nd)] + [2 * nd]
  return w.transpose(perm).reshape(q + [w.shape[-1], -1])      # (*q, C_in, (*s, C_out))


def conv_transpose_phase(y, w, geo: ConvGeometry):
  """`conv_transpose(y, w)` for the forward geometry `geo` (see `conv_transpose_geometry`)."""
  from jaxseg.ops.conv import conv_lax_tuned
  nd, n = geo.nd, y.shape[0]
  q = _taps_per_phase(geo)
  kern = phase_kernel(w, geo)
  pads = [(qq - 1, qq - 1) for qq in q]
  cgeo = conv_geometry(y.shape, kern.shape, stride=1, padding=pads, dilation=1, groups=1)
  z = conv_lax_tuned(y, kern, cgeo)                            # (N, *blocks, (*s, C_out))
  blocks = list(z.shape[1:-1])
  cout = w.shape[-2]
  z = z.reshape([n] + blocks + list(geo.stride) + [cout])
  perm = [0] + [a for j in range(nd) for a in (1 + j, 1 + nd + j)] + [1 + 2 * nd]
  z = z.transpose(perm).reshape([n] + [b * s for b, s in zip(blocks, geo.stride)] + [cout])
  # Crop to the output: start at the forward pad lo; the negative pads cut, a
  # positive one adds outputs no input reaches (zeros).
  cfg = [(0, 0, 0)] + [(-lo, i + lo - b * s, 0) for b, s, i, (lo, _) in
                       zip(blocks, geo.stride, geo.in_shape, geo.pads)] + [(0, 0, 0)]
  return lax.pad(z, jnp.zeros((), z.dtype), cfg)
