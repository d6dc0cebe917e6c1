"""The CPU fast paths behind models' conv_impl="lax": GEMM weight gradients and stride-phase transposed convs.

(`ops.conv(impl="lax")` itself stays plain XLA; the models' layers use these.)

Both must give what the NumPy reference gives (values) and what independent
autodiff gives (gradients): the speed-ups of experiments/bench/RESULTS.md may
not change a number beyond float32 rounding.
"""

import itertools

import chex
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from jaxseg import ops, reference
from jaxseg.ops import DEFAULT_POLICY, auto, conv_grad, phase
from jaxseg.ops._common import conv_geometry, conv_transpose_geometry
from jaxseg.ops.xla import conv_lax
from ops_strategies import arrays as _arrays, conv_transpose_cases, jit_run, seeds

TOL = dict(atol=1e-4, rtol=1e-4)


def numpy_weight_grad(x, g, w_shape, *, stride, padding, dilation):
  """dW[t, ci, co] = sum over batch and outputs of x_pad[n, o*s + t*d, ci] * g[n, o, co], by loops."""
  x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
  nd = x.ndim - 2
  geo = conv_geometry(x.shape, w_shape, stride=stride, padding=padding, dilation=dilation, groups=1)
  xp = np.pad(x, [(0, 0)] + list(geo.pads) + [(0, 0)])
  dw = np.zeros(w_shape)
  for t in itertools.product(*(range(k) for k in w_shape[:nd])):
    sl = tuple(slice(tj * d, tj * d + (o - 1) * s + 1, s)
               for tj, d, o, s in zip(t, geo.dilation, geo.out_shape, geo.stride))
    xt = xp[(slice(None),) + sl + (slice(None),)]                 # (N, *out, C_in)
    dw[t] = np.tensordot(xt, g, axes=(list(range(nd + 1)), list(range(nd + 1))))
  return dw


def numpy_input_grad(g, w, x_shape, *, stride, padding, dilation):
  """dx: every output o and tap t send g[n, o] w[t]^T back to input o*s + t*d - lo, by loops."""
  g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
  nd = len(x_shape) - 2
  geo = conv_geometry(x_shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=1)
  dxp = np.zeros((x_shape[0],) + tuple(i + lo + hi for i, (lo, hi) in zip(x_shape[1:-1], geo.pads))
                 + (x_shape[-1],))
  for t in itertools.product(*(range(k) for k in w.shape[:nd])):
    sl = tuple(slice(tj * d, tj * d + (o - 1) * s + 1, s)
               for tj, d, o, s in zip(t, geo.dilation, geo.out_shape, geo.stride))
    dxp[(slice(None),) + sl + (slice(None),)] += g @ w[t].T
  return dxp[(slice(None),) + tuple(slice(lo, lo + i) for (lo, _), i in zip(geo.pads, x_shape[1:-1]))]


CASES = [
    # x shape, w shape, stride, padding, dilation -- first: the small-patch path (taps * C_in <= 64)
    ((2, 12, 12, 1), (5, 5, 1, 6), 2, "SAME", 1),        # the FCN's first layer, small
    ((2, 9, 8, 7), (3, 3, 7, 5), 1, "SAME", 1),          # 9 taps * 7 = 63 <= 64: still small
    ((2, 9, 8, 9), (3, 3, 9, 5), 1, "SAME", 1),          # 81 > 64: one GEMM per tap
    ((1, 11, 10, 12), (5, 5, 12, 4), 2, "SAME", 1),      # the FCN's 5x5/2 layer, small
    ((2, 10, 7, 10), (3, 2, 10, 3), (2, 1), [(0, 2), (1, 0)], (1, 2)),
    ((2, 13, 5), (4, 5, 6), 3, "VALID", 1),              # 1-D
    ((1, 5, 6, 4, 9), (3, 2, 3, 9, 2), (1, 2, 1), "SAME", 1),  # 3-D
    # strided: dx by col2im_input_grad (GEMM + overlap-add by phases)
    ((2, 9, 11, 3), (2, 3, 3, 4), (3, 2), "VALID", 1),   # k < s and k == s+1; rows no output reaches
    ((1, 8, 8, 2), (2, 2, 2, 3), 2, "SAME", 1),          # k == s: no overlap
    ((1, 7, 9, 2), (1, 1, 2, 3), 2, [(2, 1), (0, 3)], 1),  # 1x1 strided, explicit pads beyond the input
    ((1, 6, 5, 7, 2), (3, 3, 2, 2, 3), (2, 2, 3), "SAME", 1),  # 3-D, every dim strided
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CASES)
def test_lax_conv_gradients_equal_numpy_and_xla(x_shape, w_shape, stride, padding, dilation):
  x, w = _arrays(7, x_shape, w_shape)
  kw = dict(stride=stride, padding=padding, dilation=dilation)
  geo = conv_geometry(x.shape, w.shape, groups=1, **kw)
  (g,) = _arrays(8, (x_shape[0],) + geo.out_shape + (w_shape[-1],))

  def all_three(a, b, c):
    strided = any(s > 1 for s in geo.stride) and all(d == 1 for d in geo.dilation)
    gemm = jax.vjp(lambda p, q: conv_grad.conv(p, q, geo, dx="col2im" if strided else "xla"), a, b)  # forced
    public = jax.vjp(lambda p, q: auto.conv_auto(p, q, geo), a, b)  # as the models' layers route it
    xla = jax.vjp(lambda p, q: conv_lax(p, q, geo), a, b)
    return gemm[0], gemm[1](c), public[0], public[1](c), xla[1](c)

  y, (dx, dw), y_pub, grads_pub, (dx_xla, dw_xla) = jax.jit(all_three)(x, w, g)
  want = reference.conv(x, w, **kw)
  chex.assert_trees_all_close((np.asarray(y), np.asarray(y_pub)), (want, want), **TOL)
  chex.assert_trees_all_close(np.asarray(dw), numpy_weight_grad(x, g, w_shape, **kw), **TOL)
  chex.assert_trees_all_close(np.asarray(dx), numpy_input_grad(g, w, x_shape, **kw), **TOL)
  chex.assert_trees_all_close((dx, dw), (dx_xla, dw_xla), **TOL)
  chex.assert_trees_all_close(grads_pub, (dx_xla, dw_xla), **TOL)


def test_which_layers_take_the_gemm_weight_gradient():
  # The rule of ConvPolicy.gemm_*, on the routes without the C++ kernels (kernels=False: those
  # come first where they apply, see test_auto.py).
  def geo(x_shape, w_shape, stride=1, groups=1):
    return conv_geometry(x_shape, w_shape, stride=stride, padding="SAME", dilation=1, groups=groups)

  def gemm(g, batch):
    return auto.conv_route(g, batch=batch, kernels=False) == "gemm_grad"

  fcn_conv0 = geo((8, 256, 256, 1), (5, 5, 1, 100), 2)
  fcn_conv1 = geo((8, 64, 64, 100), (5, 5, 100, 200), 2)
  unet_full_res = geo((8, 256, 256, 16), (3, 3, 16, 16))
  unet_128 = geo((8, 128, 128, 32), (3, 3, 32, 32))
  unet_32 = geo((8, 32, 32, 128), (3, 3, 128, 128))             # 8 * 32 * 32 = 2^13 rows
  unet_32_batch32 = geo((32, 32, 32, 128), (3, 3, 128, 128))    # 2^15 rows
  fcn_upscore_phase = geo((8, 16, 16, 2), (2, 2, 2, 512))       # 8 * 17 * 17 rows, padded
  grouped = geo((8, 16, 16, 64), (3, 3, 32, 64), stride=2, groups=2)
  assert gemm(fcn_conv0, 8) and gemm(fcn_conv1, 8)   # strided
  fcn_conv3 = geo((8, 16, 16, 200), (3, 3, 200, 300))            # few rows, large patches
  assert gemm(fcn_upscore_phase, 8)                # few rows, small patches
  assert not gemm(unet_32, 8) and not gemm(fcn_conv3, 8)
  assert not gemm(unet_full_res, 8)        # XLA's dW is faster there
  assert not gemm(unet_128, 8)
  assert not gemm(unet_32_batch32, 32)
  assert not gemm(grouped, 8)
  small = DEFAULT_POLICY.gemm_small_patch
  assert len(fcn_conv0.taps) * fcn_conv0.cin <= small < len(fcn_conv1.taps) * fcn_conv1.cin


PHASE_CASES = [
    # y shape, w shape (*k, C_out, C_in), stride, padding, output_padding
    ((2, 4, 4, 2), (31, 31, 2, 2), 16, "SAME", None),    # the lab FCN's upscore, on 4x4 -> 64x64
    ((2, 5, 6, 3), (2, 2, 4, 3), 2, "SAME", None),       # U-Net up-conv (no overlap)
    ((2, 5, 6, 3), (5, 5, 4, 3), 2, "VALID", None),
    ((1, 4, 5, 2), (3, 4, 3, 2), (2, 3), "SAME", None),
    ((1, 4, 5, 2), (3, 3, 3, 2), 2, "SAME", 1),
    ((1, 4, 5, 2), (4, 4, 2, 2), 2, [(1, 2), (0, 3)], None),
    ((2, 4, 4, 1), (2, 2, 3, 1), 3, "SAME", (2, 0)),
    ((1, 7, 3), (5, 2, 3), 3, "VALID", None),            # 1-D
    ((1, 3, 2, 4, 2), (3, 2, 3, 2, 2), (2, 2, 1), "SAME", None),  # 3-D
    ((1, 3, 2, 4, 2), (2, 2, 2, 3, 2), 2, "SAME", None),  # 3-D up-conv: the per-phase GEMM rows
    ((2, 4, 5, 3), (1, 2, 4, 3), (2, 3), "VALID", None),  # kernel smaller than the stride
]


def _phase_and_direct(y, w, kw):
  geo = conv_transpose_geometry(y.shape, w.shape, dilation=1, **kw)

  # "direct" unrolls one op per tap: for the 31x31 upscore (961 taps) that compiles
  # for a minute and a half, so there the gradients are checked against XLA's.
  other = "direct" if np.prod(w.shape[:-2]) <= 64 else "lax"

  def run(a, b, c):
    ours = jax.vjp(lambda p, q: phase.conv_transpose_phase(p, q, geo), a, b)
    direct = jax.vjp(lambda p, q: ops.conv_transpose(p, q, impl=other, **kw), a, b)
    return ours[0], ours[1](c), direct[1](c)
  return run


@pytest.mark.parametrize("y_shape,w_shape,stride,padding,output_padding", PHASE_CASES)
def test_phase_transposed_conv_equals_reference(y_shape, w_shape, stride, padding, output_padding):
  y, w = _arrays(11, y_shape, w_shape)
  kw = dict(stride=stride, padding=padding, output_padding=output_padding)
  want = reference.conv_transpose(y, w, **kw)
  (g,) = _arrays(12, want.shape)
  x, grads, grads_direct = jax.jit(_phase_and_direct(y, w, kw))(y, w, g)
  chex.assert_trees_all_close(np.asarray(x), want, **TOL)
  chex.assert_trees_all_close(grads, grads_direct, **TOL)
  # the adjoint identity <conv_transpose(y, w), g> = <y, conv(g, w)> with the forward conv's pads
  geo = conv_transpose_geometry(y.shape, w.shape, dilation=1, **kw)
  fwd = reference.conv(g, w, stride=geo.stride, padding=list(geo.pads))
  np.testing.assert_allclose(np.vdot(want, g), np.vdot(y, fwd), rtol=1e-9)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_transpose_cases(), seed=seeds())
def test_phase_transposed_conv_random_cases(case, seed):
  y_shape, w_shape, kw = case
  assume(all(d == 1 for d in kw["dilation"]))
  kw = {k: v for k, v in kw.items() if k != "dilation"}
  y, w = _arrays(seed, y_shape, w_shape)
  want = reference.conv_transpose(y, w, **kw)
  (g,) = _arrays(seed + 1, want.shape)
  x, grads, grads_direct = jit_run(_phase_and_direct(y, w, kw), y, w, g)
  chex.assert_trees_all_close(np.asarray(x), want, **TOL)
  chex.assert_trees_all_close(grads, grads_direct, **TOL)
