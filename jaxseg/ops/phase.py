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

When the kernel is no larger than the stride (q = 1, the U-Net's 2x2/2
up-convs) the stride-1 conv is a GEMM, done per leading phase so that no
depth-to-space transpose is needed (`_no_overlap`). The same phase split
gives the input gradient of a strided conv (`conv_grad.col2im_input_grad`),
which shares `interleave_phases` and `crop_to_input`.

Dilation 1 only (the models' transposed convs). The stride-1 conv (q > 1)
is the `conv_fn` passed in: XLA's for the named impl "phase", the `auto`
route's under "auto". The GEMMs of the q = 1 form are differentiated by JAX
(GEMMs too).
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
from jax import lax

from jaxseg.ops._common import ConvGeometry, conv_geometry, prod
from jaxseg.ops.xla import conv_lax


def taps_per_phase(geo: ConvGeometry) -> list[int]:
  """q = ceil(k / s) per spatial dim: the taps each output phase sees."""
  return [-(-k // s) for k, s in zip(geo.kernel, geo.stride)]


def phase_kernel(w, geo: ConvGeometry):
  """(*k, C_out, C_in) -> (*q, C_in, prod(s) * C_out): tap p of phase r is w[(q-1-p)*s + r]."""
  nd = geo.nd
  q = taps_per_phase(geo)
  w = lax.pad(w, jnp.zeros((), w.dtype),
              [(0, qq * s - k, 0) for k, s, qq in zip(geo.kernel, geo.stride, q)] + [(0, 0, 0)] * 2)
  shape = []
  for qq, s in zip(q, geo.stride):
    shape += [qq, s]
  w = w.reshape(shape + list(w.shape[-2:]))                    # (q1, s1, q2, s2, .., C_out, C_in)
  w = jnp.flip(w, axis=tuple(2 * j for j in range(nd)))
  perm = [2 * j for j in range(nd)] + [2 * nd + 1] + [1 + 2 * j for j in range(nd)] + [2 * nd]
  return w.transpose(perm).reshape(q + [w.shape[-1], -1])      # (*q, C_in, (*s, C_out))


def _no_overlap(y, kern, geo: ConvGeometry):
  """The phases of a q == 1 transposed conv (kernel <= stride: U-Net's 2x2/2), interleaved by stacking.

  With one tap per phase the stride-1 conv is a GEMM, y (M, C_in) @ kern
  (C_in, (*s, C_out)). Its columns for one value of the leading phases
  (r_1..r_{nd-1}) are, reshaped, whole output rows: (N, *blocks, s_nd *
  C_out) is (N, *blocks[:-1], blocks[-1] * s_nd, C_out). So one GEMM per
  leading phase and a stack of these rows give the output without the
  depth-to-space transpose, whose gradient (a space-to-depth copy in chunks of
  s_nd * C_out floats) cost unet_small's up-convs more than their GEMMs.
  """
  nd, n, cin = geo.nd, y.shape[0], y.shape[-1]
  blocks, s = list(y.shape[1:-1]), list(geo.stride)
  cout = kern.shape[-1] // prod(s)
  k2 = kern.reshape(cin, prod(s[:-1]), s[-1] * cout)
  y2 = y.reshape(-1, cin)
  rows = [(y2 @ k2[:, i]).reshape([n] + blocks[:-1] + [blocks[-1] * s[-1] * cout])
          for i in range(prod(s[:-1]))]
  # rows[i], i = (r_1..r_{nd-1}) row-major: stack the last of them first, at the axis after its block.
  for j in reversed(range(nd - 1)):
    groups = [rows[g:g + s[j]] for g in range(0, len(rows), s[j])]
    rows = [jnp.stack(g, axis=2 + j) for g in groups]
  z = rows[0]      # (N, b_1, s_1, ..., b_{nd-1}, s_{nd-1}, b_nd * s_nd * C_out)
  return z.reshape([n] + [b * t for b, t in zip(blocks, s)] + [cout])


def conv_transpose_phase(y, w, geo: ConvGeometry, *, conv_fn=conv_lax, rows: bool = True):
  """`conv_transpose(y, w)` for the forward geometry `geo` (see `conv_transpose_geometry`).

  conv_fn(y, kernel, geometry) computes the stride-1 conv of the phases; with
  `rows`, kernels no larger than the stride (q == 1) take the GEMM-rows form
  (`_no_overlap`) instead of the conv and a depth-to-space.
  """
  n = y.shape[0]
  q = taps_per_phase(geo)
  kern = phase_kernel(w, geo)
  if rows and all(qq == 1 for qq in q):
    z = _no_overlap(y, kern, geo)                              # (N, *(blocks * s), C_out)
  else:
    pads = [(qq - 1, qq - 1) for qq in q]
    cgeo = conv_geometry(y.shape, kern.shape, stride=1, padding=pads, dilation=1, groups=1)
    z = conv_fn(y, kern, cgeo)                                # (N, *blocks, (*s, C_out))
    blocks = list(z.shape[1:-1])
    z = interleave_phases(z.reshape([n] + blocks + list(geo.stride) + [w.shape[-2]]))
  return crop_to_input(z, geo)


def interleave_phases(z):
  """(N, *blocks, *s, C) -> (N, *(blocks * s), C): depth-to-space, phase r of block b at b * s + r."""
  nd = (z.ndim - 2) // 2
  perm = [0] + [a for j in range(nd) for a in (1 + j, 1 + nd + j)] + [1 + 2 * nd]
  shape = [z.shape[0]] + [z.shape[1 + j] * z.shape[1 + nd + j] for j in range(nd)] + [z.shape[-1]]
  return z.transpose(perm).reshape(shape)


def assemble_phases(phases, geo: ConvGeometry):
  """A strided conv's input gradient from its stride phases.

  phases: one (N, *m, C_in) array per phase r, in `itertools.product` order
  of the strides, phase r's m-th entry belonging to padded input m*s + r.
  Stacked, interleaved (`interleave_phases`) and cropped to the input
  (`crop_to_input`).
  """
  n, m, cin = phases[0].shape[0], phases[0].shape[1:-1], phases[0].shape[-1]
  z = jnp.stack(phases, axis=1 + geo.nd).reshape((n, *m, *geo.stride, cin))
  return crop_to_input(interleave_phases(z), geo)


def crop_to_input(z, geo: ConvGeometry):
  """The forward conv's input window of a padded-input-grid array (N, *padded, C).

  Starts at the forward pad lo; the negative pads cut, a positive one adds
  positions no output reaches (zeros).
  """
  cfg = [(0, 0, 0)] + [(-lo, i + lo - p, 0) for p, i, (lo, _) in
                       zip(z.shape[1:-1], geo.in_shape, geo.pads)] + [(0, 0, 0)]
  return lax.pad(z, jnp.zeros((), z.dtype), cfg)


def col2im_input_grad(g, w, geo: ConvGeometry):
  """dx (N, *in, C_in) of an undilated, ungrouped conv: one GEMM, then overlap-add by stride phases.

  The columns dX = dY W^T (N*P, taps * C_in) hold each output's contribution
  to each of its taps' inputs; input i (padded: i + lo = o*s + t) sums those
  of all (o, t) that reach it. Splitting t = a*s + r, the inputs of phase r
  (i + lo = r mod s) form an image m = o + a on which tap (a, r) is the
  column block shifted by a: a sum of padded slices that XLA fuses into one
  loop per phase, reading dX once, with no scatter and no transpose of it.
  The phases are interleaved (`interleave_phases`) and cropped to the
  input. For stride 1 there is one phase: the GEMM's columns overlap-added
  (what a conv with few input channels uses, where a direct kernel would fill
  few vector lanes).
  """
  nd, n, cin, cout = geo.nd, g.shape[0], geo.cin, geo.cout
  out, k, s = geo.out_shape, geo.kernel, geo.stride
  cols = (g.reshape(-1, cout) @ w.reshape(-1, cout).T).reshape((n,) + out + k + (cin,))
  q = taps_per_phase(geo)
  m = [o + qq - 1 for o, qq in zip(out, q)]
  zero = jnp.zeros((), g.dtype)
  phases = []
  for r in itertools.product(*(range(ss) for ss in s)):
    acc = jnp.zeros((n, *m, cin), g.dtype)
    for a in itertools.product(*(range(qq) for qq in q)):
      t = tuple(aj * sj + rj for aj, sj, rj in zip(a, s, r))
      if all(tj < kj for tj, kj in zip(t, k)):
        block = cols[(slice(None),) * (1 + nd) + t]             # (N, *out, C_in)
        acc = acc + lax.pad(block, zero, [(0, 0, 0)] + [(aj, mj - oj - aj, 0) for aj, mj, oj
                                                         in zip(a, m, out)] + [(0, 0, 0)])
    phases.append(acc)
  return assemble_phases(phases, geo)
