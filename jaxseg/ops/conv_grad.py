"""XLA convolutions with weight gradients as GEMMs where XLA:CPU's own is slow.

The models' conv layers under ``conv_impl="lax"`` (`ops.conv.conv_lax_tuned`)
compute exactly `lax.conv_general_dilated`; on the CPU their backward pass,
for the layers where it pays, is this module's: the
input gradient is XLA's own (the transposed conv), the weight gradient
dW[t] = X_t^T dY is formed as GEMMs instead of XLA's weight-gradient conv.
Where it pays was measured in the whole train step (one process, variants
alternated: `experiments/bench/step_variants.py --variants
base,xla_conv_grad,gemm_dw_strided_small,gemm_dw_all`, AMD EPYC, 2 cores):

- strided convs, where XLA:CPU's dW is 2-4x slower than its forward: the lab
  FCN's 5x5/2 layers (fcn step 0.403 s all-XLA -> 0.347 s);
- stride-1 convs with few output rows (N * prod(out) <= 2^14): the FCN's
  upscore in stride-phase form (2 input channels, 8 x 17 x 17 rows, where
  XLA's dW conv took ~20 ms) and the U-Net's 16^2 and 32^2 layers;
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

import jax
import jax.numpy as jnp

from jaxseg.ops._common import ConvGeometry, prod

SMALL_PATCH = 64      # taps * C_in at or below which dW is one GEMM over the transposed patches
MAX_ROWS_STRIDE1 = 2**14  # stride-1 convs use GEMM dW up to this many output rows (N * prod(out))


def applies(geo: ConvGeometry, batch: int) -> bool:
  """Whether the GEMM weight gradient is used (ungrouped convs on the CPU; see the module doc)."""
  if geo.groups != 1 or jax.default_backend() != "cpu":
    return False
  if any(s > 1 for s in geo.stride):
    return True
  return batch * prod(geo.out_shape) <= MAX_ROWS_STRIDE1


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
  vx, vw = _varying(x), _varying(w)
  if vx - vw:
    w = jax.lax.pcast(w, tuple(sorted(vx - vw)), to="varying")
  if vw - vx:
    x = jax.lax.pcast(x, tuple(sorted(vw - vx)), to="varying")
  return _conv(x, w, geo)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geo):
  return _forward(x, w, geo)


def _small(geo: ConvGeometry) -> bool:
  return len(geo.taps) * geo.cin <= SMALL_PATCH


def _forward(x, w, geo):
  from jaxseg.ops.conv import conv_lax
  return conv_lax(x, w, geo)


def _fwd(x, w, geo):
  return _forward(x, w, geo), (x, w)


def _bwd(geo, res, g):
  from jaxseg.ops.conv import conv_lax
  x, w = res
  # XLA drops dx where nobody uses it (the first layer's input is the data).
  dx = jax.vjp(lambda v: conv_lax(v, w, geo), x)[1](g)[0]
  return dx, weight_grad(x, g, geo)


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
