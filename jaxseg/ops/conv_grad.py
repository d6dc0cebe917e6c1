"""XLA convolutions with weight gradients as GEMMs where XLA:CPU's own is slow.

The models' conv layers under ``conv_impl="lax"`` (`ops.conv.conv_lax_tuned`)
compute exactly `lax.conv_general_dilated`; on the CPU their backward pass,
for the layers where it pays, is this module's: the weight gradient
dW[t] = X_t^T dY is formed as GEMMs instead of XLA's weight-gradient conv, and
for strided convs the input gradient is a GEMM and an overlap-add by stride
phases (`col2im_input_grad`) instead of XLA's conv over the stride-dilated
cotangent; otherwise the input gradient is XLA's own.
Where it pays was measured in the whole train step (one process, variants
alternated: `experiments/bench/step_variants.py --variants
base,xla_conv_grad,gemm_dw_strided_small,gemm_dw_all`, AMD EPYC, 2 cores):

- strided convs, where XLA:CPU's dW is 2-4x slower than its forward: the lab
  FCN's 5x5/2 layers (fcn step 0.403 s all-XLA -> 0.347 s);
- stride-1 convs with few output rows (N * prod(out) <= 2^14) and small
  patches (taps * C_in <= 64): the FCN's upscore in stride-phase form (2 input
  channels, 8 x 17 x 17 rows, where XLA's dW conv took ~20 ms). Not the
  deeper few-row layers (the FCN's 16^2 200-300-channel convs, the U-Net's
  16^2 bottom): with XLA's own convs (jaxseg.xla_flags) XLA's dW is faster
  there (fcn step 0.315 -> 0.293 s and 0.310 -> 0.302 s, unet_small 0.972 ->
  1.010 s and 0.901 -> 0.911 s: noise; `step_variants.py --variants
  base,stride1_xla_dw`, session 5, before this rule);
- not the larger stride-1 convs (the U-Net's 64^2..256^2 layers), where the
  tap slices the GEMMs need cost more memory traffic than XLA's dW conv
  (unet_small step 1.78 s with this rule vs 3.07 s with GEMM dW everywhere).

Two forms of dW, chosen by the size of the patches matrix:
- small taps * C_in (<= 64): the patches transposed, (taps * C_in, N * P) @ dY,
  one GEMM with a long contraction;
- otherwise one GEMM per tap, X_t^T (C_in, N * P) @ dY: no patches matrix
  (taps times the input) is ever built.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from jaxseg.ops._common import ConvGeometry, prod

KERNEL_FORWARD = False  # True: strided convs' forward by `cpu_conv`'s C++ kernel (tried: no gain, see kernel_forward)
KERNEL_DX = True      # strided 2-D convs: dx by stride phases on `cpu_conv`'s kernel where available
COL2IM_DX = True      # strided convs: dx by `col2im_input_grad` (False: XLA's, for comparisons)
SMALL_PATCH = 64      # taps * C_in at or below which dW is one GEMM over the transposed patches
MAX_ROWS_STRIDE1 = 2**14  # stride-1 convs use GEMM dW up to this many output rows (N * prod(out))
STRIDE1_SMALL_ONLY = True  # ... and only with small patches (taps * C_in <= SMALL_PATCH)


def applies(geo: ConvGeometry, batch: int) -> bool:
  """Whether the GEMM weight gradient is used (ungrouped convs on the CPU; see the module doc)."""
  if geo.groups != 1 or jax.default_backend() != "cpu":
    return False
  if any(s > 1 for s in geo.stride):
    return True
  return batch * prod(geo.out_shape) <= MAX_ROWS_STRIDE1 and (_small(geo) or not STRIDE1_SMALL_ONLY)


def _varying(a) -> frozenset:
  """The mesh axes `a` varies over inside `jax.shard_map` (empty outside)."""
  axis_type = getattr(jax.typeof(a), "manual_axis_type", None)
  return frozenset(getattr(axis_type, "varying", None) or ())


def conv_lax_gemm_grad(x, w, geo: ConvGeometry):
  """`lax.conv_general_dilated` whose VJP computes dW with GEMMs (see the module doc).

  Inside `jax.shard_map`, a replicated kernel meets a per-device batch: as JAX
  does for its own primitives, the kernel is first cast to varying over the
  batch's axes (`lax.pcast`), whose transpose sums dW over the devices; a
  custom VJP must return cotangents of its inputs' exact type.
  """
  x, w = match_varying(x, w)
  return _conv(x, w, geo)


def match_varying(x, w):
  """x and w cast to vary over the same `jax.shard_map` axes (a no-op outside one).

  For custom VJPs of a conv: see `conv_lax_gemm_grad`.
  """
  vx, vw = _varying(x), _varying(w)
  if vx - vw:
    w = jax.lax.pcast(w, tuple(sorted(vx - vw)), to="varying")
  if vw - vx:
    x = jax.lax.pcast(x, tuple(sorted(vw - vx)), to="varying")
  return x, w


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geo):
  return _forward(x, w, geo)


def _small(geo: ConvGeometry) -> bool:
  return len(geo.taps) * geo.cin <= SMALL_PATCH


def kernel_forward(geo: ConvGeometry, dtype) -> bool:
  """Whether the forward pass is `cpu_conv`'s C++ kernel instead of XLA's conv (strided 2-D convs,
  with KERNEL_FORWARD on). Off: on the lab FCN's 5x5/2 100->200 conv the kernel's forward alone is
  47 -> 41 ms (`experiments/bench/micro/mb_cpu_conv.py`), but the fcn step did not move (0.324 vs
  0.322 s, `step_variants.py --variants base,strided_fwd_kernel`)."""
  from jaxseg.ops import cpu_conv
  return (KERNEL_FORWARD and any(s > 1 for s in geo.stride) and cpu_conv.supports(geo, dtype)
          and cpu_conv.available())


def _forward(x, w, geo):
  from jaxseg.ops.conv import conv_lax
  if kernel_forward(geo, x.dtype):
    from jaxseg.ops import cpu_conv
    return cpu_conv.forward(x, w, geo)
  return conv_lax(x, w, geo)


def _fwd(x, w, geo):
  return _forward(x, w, geo), (x, w)


def _bwd(geo, res, g):
  from jaxseg.ops import cpu_conv
  from jaxseg.ops.conv import conv_lax
  x, w = res
  # XLA drops dx where nobody uses it (the first layer's input is the data).
  strided = any(s > 1 for s in geo.stride) and all(d == 1 for d in geo.dilation)
  if (strided and KERNEL_DX and geo.cin >= cpu_conv.MIN_DX_CHANNELS and cpu_conv.supports(geo, g.dtype)
      and cpu_conv.available()):
    dx = cpu_conv.strided_input_grad(g, w, geo)
  elif strided and COL2IM_DX:
    dx = col2im_input_grad(g, w, geo)
  else:
    dx = jax.vjp(lambda v: conv_lax(v, w, geo), x)[1](g)[0]
  return dx, weight_grad(x, g, geo)


def col2im_input_grad(g, w, geo: ConvGeometry):
  """dx (N, *in, C_in) of a strided, undilated, ungrouped conv: one GEMM, then overlap-add by phases.

  The columns dX = dY W^T (N*P, taps * C_in) hold each output's contribution
  to each of its taps' inputs; input i (padded: i + lo = o*s + t) sums those
  of all (o, t) that reach it. Splitting t = a*s + r, the inputs of phase r
  (i + lo = r mod s) form an image m = o + a on which tap (a, r) is the
  column block shifted by a: a sum of padded slices that XLA fuses into one
  loop per phase, reading dX once, with no scatter and no transpose of it.
  The phases are interleaved (`phase.interleave_phases`) and cropped to the
  input. On the lab FCN's 5x5/2 100->200 conv this replaced XLA's conv over
  the stride-dilated cotangent (fcn step 0.352 -> 0.339 s and 0.384 -> 0.368 s
  in two runs of `experiments/bench/step_variants.py`, variants in turn; the
  before is the variant strided_dx_xla).
  """
  from jaxseg.ops import phase
  nd, n, cin, cout = geo.nd, g.shape[0], geo.cin, geo.cout
  out, k, s = geo.out_shape, geo.kernel, geo.stride
  cols = (g.reshape(-1, cout) @ w.reshape(-1, cout).T).reshape((n,) + out + k + (cin,))
  q = phase.taps_per_phase(geo)
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
  return phase.assemble_phases(phases, geo)


def weight_grad(x, g, geo: ConvGeometry):
  """dW (*kernel, C_in, C_out) of conv(x, W) for the output cotangent g (ungrouped)."""
  from jaxseg.ops.conv import tap_slices
  cin, cout = geo.cin, geo.cout
  gm = g.reshape(-1, cout)
  slices = tap_slices(x, geo)
  if _small(geo):
    cols = jnp.stack([s.reshape(-1, cin).T for s in slices])      # (taps, C_in, N*P)
    dw = cols.reshape(len(slices) * cin, -1) @ gm
  else:
    dw = jnp.stack([s.reshape(-1, cin).T @ gm for s in slices])
  return dw.reshape(geo.kernel + (cin, cout)).astype(g.dtype)


_conv.defvjp(_fwd, _bwd)
