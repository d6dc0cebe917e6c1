"""Shared geometry and the two GEMM kernels behind conv and conv_transpose.

Layout trick (no im2col matrix in memory): the padded input of a stride-1
conv, flattened row-major with row length Wp, turns every kernel tap (i, j)
into a constant shift `i*Wp + j` of the flat pixel index, so an output tile
of `block_m` consecutive flat pixels reads one contiguous `(block_m, block_k)`
window per tap. Strides are handled by splitting the padded input into its
`sh*sw` stride phases in the wrapper (each phase again a flat image, and each
tap reads one phase at one shift). Outputs are computed on the "wide" grid
(all Wp columns) and the few extra columns are cropped afterwards.

The transposed conv uses the same kernel the other way round: every output
stride phase is a stride-1 correlation of the (padded) input with the subset
of kernel taps that land on that phase (sub-pixel decomposition), so the
overlap-add of the strided GEMM becomes a gather without atomics.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from kernels import backend


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes (powers of two, >= 16 because Triton's dot needs it).

  block_m: output pixels per tile (the contraction block for the weight
    gradient); block_n: output channels per tile; block_k: input channels per
    step. None picks min(64, next power of two of the channel count).
  """
  block_m: int = 64
  block_n: int | None = None
  block_k: int | None = None
  num_warps: int = 4
  num_stages: int = 2

  @classmethod
  def get_default(cls):
    return cls()

  def resolve(self, c_in, c_out):
    """Concrete (block_m, block_n, block_k) for these channel counts."""
    auto = lambda c: min(64, max(16, backend.next_power_of_2(c)))
    bm = self.block_m
    bn = auto(c_out) if self.block_n is None else self.block_n
    bk = auto(c_in) if self.block_k is None else self.block_k
    for name, b in (("block_m", bm), ("block_n", bn), ("block_k", bk)):
      if b < 16 or b & (b - 1):
        raise ValueError(f"{name}={b} must be a power of two >= 16")
    return bm, bn, bk


def pair(v, name):
  """An int or a pair of positive ints -> tuple of two ints."""
  t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
  if len(t) != 2 or not all(isinstance(a, (int, np.integer)) and a >= 1 for a in t):
    raise ValueError(f"{name}={v!r} must be a positive int or a pair of them (2-D only)")
  return tuple(int(a) for a in t)


def conv_pads(in_hw, k_eff, stride, padding):
  """Forward-conv (lo, hi) pads per spatial dim, like lax.conv_general_dilated."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding={padding!r} must be 'SAME', 'VALID' or ((lo, hi), (lo, hi))")
    return tuple(tuple(int(p) for p in lh) for lh in
                 jax.lax.padtype_to_pads(in_hw, k_eff, stride, padding.upper()))
  pads = tuple(tuple(int(p) for p in lh) for lh in padding)
  if len(pads) != 2 or any(len(lh) != 2 for lh in pads):
    raise ValueError(f"padding={padding!r} must be 2 (lo, hi) pairs for a 2-D conv")
  return pads


def conv_out_size(n, k_eff, s, lo, hi):
  return (n + lo + hi - k_eff) // s + 1


# ----------------------------------------------------------------------------
# Forward geometry: stride phases of the padded input, one tap table.


@dataclasses.dataclass(frozen=True)
class ForwardGeometry:
  in_hw: tuple
  kernel_hw: tuple
  stride: tuple
  pads: tuple
  dilation: tuple

  @property
  def k_eff(self):
    return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_hw, self.dilation))

  @property
  def out_hw(self):
    return tuple(conv_out_size(n, k, s, lo, hi) for n, k, s, (lo, hi) in
                 zip(self.in_hw, self.k_eff, self.stride, self.pads))

  @property
  def phase_hw(self):
    """Size of one stride phase of the padded input."""
    return tuple(-(-(n + lo + hi) // s) for n, s, (lo, hi) in
                 zip(self.in_hw, self.stride, self.pads))

  def taps(self):
    """(phase, flat shift) of every kernel tap, row-major over (i, j)."""
    (kh, kw), (sh, sw), (dh, dw) = self.kernel_hw, self.stride, self.dilation
    wph = self.phase_hw[1]
    out = []
    for i in range(kh):
      for j in range(kw):
        out.append((((i * dh) % sh) * sw + (j * dw) % sw,
                    ((i * dh) // sh) * wph + (j * dw) // sw))
    return out

  def max_shift(self):
    return max(off for _, off in self.taps())

  def rows(self):
    """Flat output rows on the wide grid (all phase columns)."""
    return self.out_hw[0] * self.phase_hw[1]


def phase_split(x, geom, pad_value, rows_padded):
  """(N, H, W, C) -> (N, sh*sw, L, C): padded input split into flat stride phases.

  L covers every read of a `rows_padded`-row output (tail padded with pad_value).
  """
  (sh, sw), (hph, wph) = geom.stride, geom.phase_hw
  (plh, phh), (plw, phw) = geom.pads
  n, h, w, c = x.shape
  # Negative pads crop, as in lax.conv_general_dilated.
  x = jax.lax.pad(x, jnp.asarray(pad_value, x.dtype),
                  ((0, 0, 0), (plh, hph * sh - h - plh, 0),
                   (plw, wph * sw - w - plw, 0), (0, 0, 0)))
  x = x.reshape(n, hph, sh, wph, sw, c).transpose(0, 2, 4, 1, 3, 5)
  x = x.reshape(n, sh * sw, hph * wph, c)
  length = rows_padded + geom.max_shift()
  return jnp.pad(x, ((0, 0), (0, 0), (0, max(0, length - hph * wph)), (0, 0)),
                 constant_values=pad_value)


def from_wide(out, geom, c):
  """(N, rows_padded, C_p) on the wide grid -> (N, OH, OW, C)."""
  (oh, ow), wph = geom.out_hw, geom.phase_hw[1]
  n = out.shape[0]
  return out[:, :oh * wph].reshape(n, oh, wph, -1)[:, :, :ow, :c]


def to_wide(y, geom, rows_padded, c_p):
  """(N, OH, OW, C) -> (N, rows_padded, C_p) on the wide grid, zeros elsewhere."""
  (oh, ow), wph = geom.out_hw, geom.phase_hw[1]
  n, _, _, c = y.shape
  y = jnp.pad(y, ((0, 0), (0, 0), (0, wph - ow), (0, c_p - c))).reshape(n, oh * wph, c_p)
  return jnp.pad(y, ((0, 0), (0, rows_padded - oh * wph), (0, 0)))


# ----------------------------------------------------------------------------
# Transposed geometry: output stride phases, per-phase tap tables.


def _phase_taps_1d(k, s, d, lo):
  """Per output phase r: list of (tap i, shift e) with i*d - r - lo == e*s."""
  return [[(i, (i * d - r - lo) // s) for i in range(k) if (i * d - r - lo) % s == 0]
          for r in range(s)]


@dataclasses.dataclass(frozen=True)
class TransposeGeometry:
  """Adjoint of the forward conv `ForwardGeometry` (out_hw = fwd.in_hw)."""
  fwd: ForwardGeometry

  def _dim(self, a):
    g = self.fwd
    k, s, d, lo = g.kernel_hw[a], g.stride[a], g.dilation[a], g.pads[a][0]
    per_phase = _phase_taps_1d(k, s, d, lo)
    shifts = [e for ph in per_phase for _, e in ph] or [0]
    p_lo = max(0, max(shifts))
    m = -(-g.in_hw[a] // s)                 # rows per output phase
    u_max = p_lo - min(shifts)
    n_in = g.out_hw[a]
    padded = max(m + u_max, p_lo + n_in)
    tmax = max(1, max(len(ph) for ph in per_phase))
    return dict(per_phase=per_phase, p_lo=p_lo, p_hi=padded - p_lo - n_in,
                m=m, padded=padded, tmax=tmax)

  @functools.cached_property
  def dims(self):
    return (self._dim(0), self._dim(1))

  def rows(self):
    dh, dw = self.dims
    return dh["m"] * dw["padded"]

  def tables(self):
    """(phases, T) arrays: flat shift, tap index (kh*kw marks an empty slot)."""
    (dh, dw), (kh, kw) = self.dims, self.fwd.kernel_hw
    sh, sw = self.fwd.stride
    t = dh["tmax"] * dw["tmax"]
    shift = np.zeros((sh * sw, t), np.int32)
    tap = np.full((sh * sw, t), kh * kw, np.int32)
    for rh in range(sh):
      for rw in range(sw):
        for a, (i, eh) in enumerate(dh["per_phase"][rh]):
          for b, (j, ew) in enumerate(dw["per_phase"][rw]):
            slot = a * dw["tmax"] + b
            shift[rh * sw + rw, slot] = ((dh["p_lo"] - eh) * dw["padded"] + dw["p_lo"] - ew)
            tap[rh * sw + rw, slot] = i * kw + j
    return shift, tap

  def pad_flat(self, y, rows_padded, c_p, pad_value=0):
    """(N, OH, OW, C) -> (N, 1, L, C_p): the padded, flattened input of the transpose."""
    (dh, dw) = self.dims
    n, _, _, c = y.shape
    y = jnp.pad(y, ((0, 0), (dh["p_lo"], dh["p_hi"]), (dw["p_lo"], dw["p_hi"]), (0, c_p - c)),
                constant_values=pad_value)
    y = y.reshape(n, 1, dh["padded"] * dw["padded"], c_p)
    shift, _ = self.tables()
    length = rows_padded + int(shift.max())
    return jnp.pad(y, ((0, 0), (0, 0), (0, max(0, length - y.shape[2])), (0, 0)),
                   constant_values=pad_value)

  def interleave(self, out, c):
    """(N, sh*sw, rows_padded, C_p) per-phase wide outputs -> (N, H, W, C)."""
    (dh, dw), (sh, sw), (h, w) = self.dims, self.fwd.stride, self.fwd.in_hw
    n = out.shape[0]
    out = out[:, :, :dh["m"] * dw["padded"]].reshape(n, sh, sw, dh["m"], dw["padded"], -1)
    out = out[:, :, :, :, :-(-w // sw), :c]
    out = out.transpose(0, 3, 1, 4, 2, 5).reshape(n, dh["m"] * sh, -(-w // sw) * sw, c)
    return out[:, :h, :w]


# ----------------------------------------------------------------------------
# Kernel 1: out[n, po, p] = sum_t x[n, phase[po,t], p + shift[po,t]] @ w[po, t].


def _tap_gemm_kernel(tab_ref, x_ref, w_ref, o_ref, *, num_taps, block_m, block_k, k_steps):
  po = pl.program_id(1)
  m0 = pl.program_id(2) * block_m

  def body(it, acc):
    # lax.div/rem: jnp's floor-mod adds sign fix-ups Triton cannot lower.
    t = jax.lax.div(it, k_steps)
    c0 = jax.lax.rem(it, k_steps) * block_k
    phase = tab_ref[2 * (po * num_taps + t)]
    shift = tab_ref[2 * (po * num_taps + t) + 1]
    xb = x_ref[phase, pl.ds(m0 + shift, block_m), pl.ds(c0, block_k)]
    wb = w_ref[t, pl.ds(c0, block_k), :]
    return acc + jnp.dot(xb, wb, preferred_element_type=jnp.float32)

  acc = jax.lax.fori_loop(0, num_taps * k_steps, body,
                          jnp.zeros(o_ref.shape, jnp.float32))
  o_ref[...] = acc.astype(o_ref.dtype)


def tap_gemm(x_flat, w_tab, phase, shift, *, rows_padded, block_sizes, interpret):
  """x_flat (N, Px, L, Ci_p), w_tab (Po, T, Ci_p, Co_p), tables (Po, T) -> (N, Po, rows, Co_p)."""
  n, _, length, ci_p = x_flat.shape
  po, t, _, co_p = w_tab.shape
  bm, bn, bk = block_sizes.resolve(ci_p, co_p)
  assert rows_padded % bm == 0 and ci_p % bk == 0 and co_p % bn == 0
  assert length >= rows_padded + int(np.max(shift)), (length, rows_padded, np.max(shift))
  tab = jnp.asarray(np.stack([phase, shift], -1).reshape(-1), jnp.int32)
  kernel = functools.partial(_tap_gemm_kernel, num_taps=t, block_m=bm, block_k=bk,
                             k_steps=ci_p // bk)
  return backend.pallas_call(
      kernel,
      grid=(n, po, rows_padded // bm, co_p // bn),
      in_specs=[pl.BlockSpec(tab.shape, lambda b, p, m, j: (0,)),
                pl.BlockSpec((None,) + x_flat.shape[1:], lambda b, p, m, j: (b, 0, 0, 0)),
                pl.BlockSpec((None, t, ci_p, bn), lambda b, p, m, j: (p, 0, 0, j))],
      out_specs=pl.BlockSpec((None, None, bm, bn), lambda b, p, m, j: (b, p, m, j)),
      out_shape=jax.ShapeDtypeStruct((n, po, rows_padded, co_p), x_flat.dtype),
      compiler_params=backend.compiler_params(num_warps=block_sizes.num_warps,
                                              num_stages=block_sizes.num_stages),
      interpret=interpret,
      name="conv_tap_gemm",
  )(tab, x_flat, w_tab)


# ----------------------------------------------------------------------------
# Kernel 2 (weight gradient): dw[t] = sum_{n,p} x[n, phase[t], p + shift[t]]^T dy[n, p].


def _weight_grad_kernel(tab_ref, x_ref, g_ref, o_ref, *, m_steps, chunk, block_m):
  t = pl.program_id(0)
  phase = tab_ref[2 * t]
  shift = tab_ref[2 * t + 1]
  k_size, n_size = o_ref.shape
  c0 = pl.program_id(1) * k_size
  j0 = pl.program_id(2) * n_size
  first = pl.program_id(3) * chunk

  def body(it, acc):
    b = jax.lax.div(first + it, m_steps)
    m0 = jax.lax.rem(first + it, m_steps) * block_m
    xb = x_ref[b, phase, pl.ds(m0 + shift, block_m), pl.ds(c0, k_size)]
    gb = g_ref[b, pl.ds(m0, block_m), pl.ds(j0, n_size)]
    return acc + jnp.dot(xb.T, gb, preferred_element_type=jnp.float32)

  acc = jax.lax.fori_loop(0, chunk, body, jnp.zeros(o_ref.shape, jnp.float32))
  o_ref[...] = acc.astype(o_ref.dtype)


# Split the pixel reduction of the weight gradient until about this many
# programs run (a 3x3 conv with 64 channels has only 9 output tiles).
_TARGET_PROGRAMS = 512


def _num_splits(steps, programs):
  """Largest divisor of `steps` not above the split that reaches _TARGET_PROGRAMS."""
  want = max(1, min(steps, -(-_TARGET_PROGRAMS // programs)))
  return max(d for d in range(1, want + 1) if steps % d == 0)


def weight_grad(x_flat, dy_wide, phase, shift, *, block_sizes, interpret):
  """x_flat (N, Px, L, Ci_p), dy_wide (N, rows, Co_p), tables (T,) -> (T, Ci_p, Co_p) float32.

  Split-K: the N*rows pixels are cut into `splits` chunks, each program sums
  one chunk and the wrapper adds the partial results.
  """
  n, _, length, ci_p = x_flat.shape
  _, rows, co_p = dy_wide.shape
  bm, bn, bk = block_sizes.resolve(ci_p, co_p)
  assert rows % bm == 0 and length >= rows + int(np.max(shift))
  t = len(phase)
  steps = n * (rows // bm)
  splits = _num_splits(steps, t * (ci_p // bk) * (co_p // bn))
  tab = jnp.asarray(np.stack([phase, shift], -1).reshape(-1), jnp.int32)
  kernel = functools.partial(_weight_grad_kernel, m_steps=rows // bm, chunk=steps // splits,
                             block_m=bm)
  parts = backend.pallas_call(
      kernel,
      grid=(t, ci_p // bk, co_p // bn, splits),
      in_specs=[pl.BlockSpec(tab.shape, lambda i, c, j, s: (0,)),
                pl.BlockSpec(x_flat.shape, lambda i, c, j, s: (0, 0, 0, 0)),
                pl.BlockSpec(dy_wide.shape, lambda i, c, j, s: (0, 0, 0))],
      out_specs=pl.BlockSpec((None, None, bk, bn), lambda i, c, j, s: (s, i, c, j)),
      out_shape=jax.ShapeDtypeStruct((splits, t, ci_p, co_p), jnp.float32),
      compiler_params=backend.compiler_params(num_warps=block_sizes.num_warps,
                                              num_stages=block_sizes.num_stages),
      interpret=interpret,
      name="conv_weight_grad",
  )(tab, x_flat, dy_wide)
  return parts.sum(0)


# ----------------------------------------------------------------------------
# The three linear maps, all on NHWC arrays, used by conv and conv_transpose.


def conv_forward(x, w, geom, block_sizes, interpret):
  """conv(x, w) with the forward geometry; w (kh, kw, Cin, Cout)."""
  kh, kw, ci, co = w.shape
  bm, bn, bk = block_sizes.resolve(ci, co)
  ci_p, co_p = backend.round_up(ci, bk), backend.round_up(co, bn)
  rows = backend.round_up(geom.rows(), bm)
  xf = phase_split(jnp.pad(x, ((0, 0),) * 3 + ((0, ci_p - ci),)), geom, 0, rows)
  taps = geom.taps()
  phase = np.array([[p for p, _ in taps]], np.int32)
  shift = np.array([[s for _, s in taps]], np.int32)
  w_tab = jnp.pad(w.reshape(1, kh * kw, ci, co), ((0, 0), (0, 0), (0, ci_p - ci), (0, co_p - co)))
  out = tap_gemm(xf, w_tab.astype(x.dtype), phase, shift, rows_padded=rows,
                 block_sizes=block_sizes, interpret=interpret)
  return from_wide(out[:, 0], geom, co)


def conv_weight_grad(x, dy, geom, block_sizes, interpret):
  """d<conv(x, w), dy>/dw, shape (kh, kw, Cin, Cout)."""
  kh, kw = geom.kernel_hw
  ci, co = x.shape[-1], dy.shape[-1]
  bm, bn, bk = block_sizes.resolve(ci, co)
  ci_p, co_p = backend.round_up(ci, bk), backend.round_up(co, bn)
  rows = backend.round_up(geom.rows(), bm)
  xf = phase_split(jnp.pad(x, ((0, 0),) * 3 + ((0, ci_p - ci),)), geom, 0, rows)
  taps = geom.taps()
  dw = weight_grad(xf, to_wide(dy, geom, rows, co_p),
                   np.array([p for p, _ in taps], np.int32),
                   np.array([s for _, s in taps], np.int32),
                   block_sizes=block_sizes, interpret=interpret)
  return dw[:, :ci, :co].reshape(kh, kw, ci, co)


def conv_input_grad(dy, w, geom, block_sizes, interpret):
  """Adjoint of conv_forward: dy (N, OH, OW, Cout) -> (N, H, W, Cin)."""
  kh, kw, ci, co = w.shape
  tgeom = TransposeGeometry(geom)
  bm, bn, bk = block_sizes.resolve(co, ci)
  co_p, ci_p = backend.round_up(co, bk), backend.round_up(ci, bn)
  rows = backend.round_up(tgeom.rows(), bm)
  shift, tap = tgeom.tables()
  # Tap matrices (Cout -> Cin) plus one zero matrix for the empty slots.
  w_t = jnp.pad(w.reshape(kh * kw, ci, co).transpose(0, 2, 1),
                ((0, 1), (0, co_p - co), (0, ci_p - ci)))
  w_tab = w_t[jnp.asarray(tap)]
  yf = tgeom.pad_flat(dy, rows, co_p)
  out = tap_gemm(yf, w_tab.astype(dy.dtype), np.zeros_like(shift), shift, rows_padded=rows,
                 block_sizes=block_sizes, interpret=interpret)
  return tgeom.interleave(out, ci)
