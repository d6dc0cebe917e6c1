"""The CPU fast paths behind conv_impl="lax": GEMM weight gradients and stride-phase transposed convs.

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
from jaxseg.ops import conv_grad, phase
from jaxseg.ops._common import conv_geometry, conv_transpose_geometry
from jaxseg.ops.conv import conv_lax
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


CASES = [
    # x shape, w shape, stride, padding, dilation -- first: the small-patch path (taps * C_in <= 64)
    ((2, 12, 12, 1), (5, 5, 1, 6), 2, "SAME", 1),        # the FCN's first layer, small
    ((2, 9, 8, 7), (3, 3, 7, 5), 1, "SAME", 1),          # 9 taps * 7 = 63 <= 64: still small
    ((2, 9, 8, 9), (3, 3, 9, 5), 1, "SAME", 1),          # 81 > 64: one GEMM per tap
    ((1, 11, 10, 12), (5, 5, 12, 4), 2, "SAME", 1),      # the FCN's 5x5/2 layer, small
    ((2, 10, 7, 10), (3, 2, 10, 3), (2, 1), [(0, 2), (1, 0)], (1, 2)),
    ((2, 13, 5), (4, 5, 6), 3, "VALID", 1),              # 1-D
    ((1, 5, 6, 4, 9), (3, 2, 3, 9, 2), (1, 2, 1), "SAME", 1),  # 3-D
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CASES)
def test_lax_conv_gradients_equal_numpy_and_xla(x_shape, w_shape, stride, padding, dilation):
  x, w = _arrays(7, x_shape, w_shape)
  kw = dict(stride=stride, padding=padding, dilation=dilation)
  geo = conv_geometry(x.shape, w.shape, groups=1, **kw)
  assert conv_grad.applies(geo)  # tests run on the CPU, where the GEMM gradient is used
  (g,) = _arrays(8, (x_shape[0],) + geo.out_shape + (w_shape[-1],))

  def both(a, b, c):
    ours = jax.vjp(lambda p, q: ops.conv(p, q, impl="lax", **kw), a, b)
    xla = jax.vjp(lambda p, q: conv_lax(p, q, geo), a, b)
    return ours[0], ours[1](c), xla[1](c)

  y, (dx, dw), (dx_xla, dw_xla) = jax.jit(both)(x, w, g)
  chex.assert_trees_all_close(np.asarray(y), reference.conv(x, w, **kw), **TOL)
  chex.assert_trees_all_close(np.asarray(dw), numpy_weight_grad(x, g, w_shape, **kw), **TOL)
  chex.assert_trees_all_close((dx, dw), (dx_xla, dw_xla), **TOL)


def test_small_patch_layers_take_the_im2col_forward():
  geo_small = conv_geometry((1, 8, 8, 1), (5, 5, 1, 4), stride=2, padding="SAME", dilation=1, groups=1)
  geo_big = conv_geometry((1, 8, 8, 9), (3, 3, 9, 4), stride=1, padding="SAME", dilation=1, groups=1)
  assert conv_grad._small(geo_small) and not conv_grad._small(geo_big)
  grouped = conv_geometry((1, 8, 8, 4), (3, 3, 2, 4), stride=1, padding="SAME", dilation=1, groups=2)
  assert not conv_grad.applies(grouped)   # grouped convs keep XLA's own gradient


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
]


def _phase_and_direct(y, w, kw):
  geo = conv_transpose_geometry(y.shape, w.shape, dilation=1, **kw)

  def run(a, b, c):
    ours = jax.vjp(lambda p, q: phase.conv_transpose_phase(p, q, geo), a, b)
    direct = jax.vjp(lambda p, q: ops.conv_transpose(p, q, impl="direct", **kw), a, b)
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
