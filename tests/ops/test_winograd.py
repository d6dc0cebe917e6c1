"""Winograd F(4x4, 3x3) convs (`jaxseg.ops.cpu.winograd`) against NumPy.

The transform matrices against the 1-D correlation they stand for (float64,
independent of the C++); each C++ transform against its NumPy form and its
transpose against it by the dot-product identity; the batched products
against einsum; then the whole conv, forward and both gradients, against the
NumPy reference on geometries with tile remainders (output sizes not multiples
of 4, images smaller than a tile), channel counts that are not multiples of 16,
VALID and asymmetric pads, 3x3/1, 5x5/2 and 6x6/2; which of the models' layers
route here under `auto` and its policy; shard_map.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import reference
from jaxseg.ops import DEFAULT_POLICY, auto
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.cpu import build, winograd

from test_cpu_direct import _machine_can
from test_fast_paths import numpy_input_grad, numpy_weight_grad

pytestmark = pytest.mark.skipif(not _machine_can(), reason="needs AVX-512 and a C++ compiler")


@pytest.fixture(scope="module", autouse=True)
def _kernels():
  assert build.available(), "the C++ kernels did not build on a machine that can build them"


def _close(got, want, rel=2e-5):
  """Winograd's rounding: bounded relative to the result's scale (the transforms scale by up to 8)."""
  want = np.asarray(want, np.float64)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=rel * np.max(np.abs(want)))


def _geo(x_shape, w_shape, stride, padding):
  return conv_geometry(x_shape, w_shape, stride=stride, padding=padding, dilation=1, groups=1)


def test_transform_matrices_compute_a_correlation():
  # F(4, 3) in 1-D: y[i] = sum_j d[i + j] g[j] for 4 outputs from 6 inputs; 2-D is its square.
  r = np.random.default_rng(0)
  for _ in range(5):
    d, g = r.standard_normal(6), r.standard_normal(3)
    want = np.array([d[i:i + 3] @ g for i in range(4)])
    np.testing.assert_allclose(winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d)), want, rtol=1e-12, atol=1e-12)
  d, g = r.standard_normal((6, 6)), r.standard_normal((3, 3))
  want = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)])
  got = winograd.AT @ ((winograd.G @ g @ winograd.G.T) * (winograd.BT @ d @ winograd.BT.T)) @ winograd.AT.T
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(winograd.GG @ g.reshape(9), (winograd.G @ g @ winograd.G.T).reshape(36), atol=1e-12)


def _numpy_input_tiles(x, th, tw, ph, pw):
  n, h, w, c = x.shape
  xp = np.zeros((n, 4 * th + 2 + ph, 4 * tw + 2 + pw, c))
  xp[:, ph:ph + h, pw:pw + w] = x[:, :4 * th + 2, :4 * tw + 2]
  out = np.zeros((6, 6, n, th, tw, c))
  for i in range(th):
    for j in range(tw):
      d = xp[:, 4 * i:4 * i + 6, 4 * j:4 * j + 6]                     # (n, 6, 6, c)
      out[:, :, :, i, j] = np.einsum("ka,nabc,lb->klnc", winograd.BT, d, winograd.BT)
  return out.reshape(36, n * th * tw, c)


def _numpy_output_tiles(m, y_shape, th, tw):
  n, h, w, k = y_shape
  m = np.asarray(m, np.float64).reshape(6, 6, n, th, tw, k)
  y = np.einsum("ia,abntuk,jb->ntiujk", winograd.AT, m, winograd.AT).reshape(n, 4 * th, 4 * tw, k)
  return y[:, :h, :w]


@pytest.mark.parametrize("shape,th,tw,ph,pw", [
    ((2, 9, 7, 20), 2, 2, 1, 1),      # tiles past the image's end; 16 + 4 channels
    ((1, 3, 5, 16), 1, 1, 0, 2),      # image smaller than a tile
    ((3, 10, 10, 33), 2, 3, 2, 0),    # tiles past both ends, 2 * 16 + 1 channels, 3 images
])
def test_transforms_and_their_transposes(shape, th, tw, ph, pw):
  r = np.random.default_rng(1)
  x = r.standard_normal(shape).astype(np.float32)
  v = np.asarray(jax.jit(lambda x: winograd.input_tiles(x, th, tw, ph, pw))(x))
  _close(v, _numpy_input_tiles(x.astype(np.float64), th, tw, ph, pw), 1e-6)
  # <B^T d B, e> = <d, transpose(e)> for random e: the transposes are the adjoints.
  e = r.standard_normal(v.shape).astype(np.float32)
  xt = np.asarray(jax.jit(lambda e: winograd.input_tiles_t(e, shape, th, tw, ph, pw))(e))
  assert xt.shape == shape
  np.testing.assert_allclose(np.vdot(x.astype(np.float64), xt), np.vdot(v.astype(np.float64), e), rtol=1e-5)
  y_shape = (shape[0], min(shape[1], 4 * th), min(shape[2], 4 * tw), shape[3])
  y = np.asarray(jax.jit(lambda m: winograd.output_tiles(m, y_shape, th, tw))(e))
  _close(y, _numpy_output_tiles(e, y_shape, th, tw), 1e-6)
  dy = r.standard_normal(y_shape).astype(np.float32)
  dm = np.asarray(jax.jit(lambda d: winograd.output_tiles_t(d, th, tw))(dy))
  np.testing.assert_allclose(np.vdot(dy.astype(np.float64), y), np.vdot(dm.astype(np.float64), e), rtol=1e-5)


@pytest.mark.parametrize("b,p,c,k", [(3, 13, 20, 36), (2, 40, 7, 16), (36, 8, 33, 5),
                                     (2, 15, 300, 20)])   # over one block of 128 channels; tail of 4
def test_batched_products(b, p, c, k):
  r = np.random.default_rng(2)
  a = r.standard_normal((b, p, c)).astype(np.float32)
  w = r.standard_normal((b, c, k)).astype(np.float32)
  g = r.standard_normal((b, p, k)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(winograd.bmm)(a, w), np.einsum("bpc,bck->bpk", a, w), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(jax.jit(winograd.bmm_tn)(a, g), np.einsum("bpc,bpk->bck", a, g), rtol=1e-4, atol=1e-4)


# x shape, w shape, stride, padding
CASES = [
    ((2, 9, 11, 20), (3, 3, 20, 36), 1, "SAME"),          # outputs not multiples of 4; channel tails
    ((1, 16, 16, 33), (3, 3, 33, 20), 1, "VALID"),        # 14^2 out
    ((2, 3, 2, 16), (3, 3, 16, 16), 1, "SAME"),           # image smaller than a tile
    ((1, 7, 9, 5), (3, 3, 5, 17), 1, [(2, 0), (0, 2)]),   # asymmetric pads
    ((2, 13, 11, 7), (5, 5, 7, 9), 2, "SAME"),            # 5x5/2 (the FCN's conv2), odd image
    ((1, 12, 12, 3), (6, 6, 3, 5), 2, "SAME"),            # 6x6/2
    ((2, 10, 9, 4), (5, 5, 4, 6), 2, [(0, 1), (2, 0)]),   # 5x5/2, explicit pads
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding", CASES)
def test_conv_and_gradients_match_numpy(x_shape, w_shape, stride, padding):
  r = np.random.default_rng(3)
  x = r.standard_normal(x_shape).astype(np.float32)
  w = (r.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(np.float32)
  geo = _geo(x_shape, w_shape, stride, padding)
  assert winograd.supports(geo)
  y, vjp = jax.vjp(lambda x, w: winograd.conv_geo(x, w, geo), x, w)
  _close(y, reference.conv(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding))
  g = r.standard_normal(y.shape).astype(np.float32)
  dx, dw = jax.jit(vjp)(g)
  _close(dx, numpy_input_grad(g, w, x_shape, stride=stride, padding=padding, dilation=1))
  _close(dw, numpy_weight_grad(x, g, w_shape, stride=stride, padding=padding, dilation=1))


def test_which_layers_use_it():
  def applies(geo, policy=None):
    return auto.conv_route(geo, batch=geo.in_shape[0], policy=policy) == "winograd"
  fcn2 = _geo((8, 64, 64, 100), (5, 5, 100, 200), 2, "SAME")
  fcn3 = _geo((8, 16, 16, 200), (3, 3, 200, 300), 1, "SAME")
  unet_64 = _geo((8, 64, 64, 64), (3, 3, 64, 64), 1, "SAME")
  assert applies(fcn2) and applies(fcn3) and applies(unet_64)
  assert not applies(_geo((8, 256, 256, 1), (5, 5, 1, 100), 2, "SAME"))     # FCN conv1
  assert not applies(_geo((8, 16, 16, 300), (3, 3, 300, 2), 1, "SAME"))     # class scores
  assert not applies(_geo((8, 128, 128, 32), (3, 3, 32, 32), 1, "SAME"))    # large image
  assert not winograd.supports(_geo((8, 64, 64, 64), (3, 3, 64, 64), 2, "SAME"))     # 3x3/2
  assert not winograd.supports(_geo((8, 64, 64, 64), (7, 7, 64, 64), 2, "SAME"))     # 4 taps/dim
  # The policy's knobs move the rule; Winograd off, or no C++ kernels, and no layer takes it.
  replace = lambda **kw: dataclasses.replace(DEFAULT_POLICY, **kw)
  assert not applies(fcn3, replace(winograd=False)) and not applies(fcn3, replace(cpu_kernels=False))
  assert applies(_geo((8, 128, 128, 32), (3, 3, 32, 32), 1, "SAME"), replace(winograd_max_pixels=128 * 128))
  assert not applies(unet_64, replace(winograd_min_channels=65))
  x = jnp.zeros((2, 16, 16, 200))
  w = jnp.zeros((3, 3, 200, 300))
  geo = _geo(x.shape, w.shape, 1, "SAME")
  assert "jaxseg_winograd_transform" in jax.jit(lambda x, w: auto.conv_auto(x, w, geo)).lower(x, w).as_text()
  off = replace(winograd=False)
  assert "jaxseg_winograd_transform" not in jax.jit(lambda x, w: auto.conv_auto(x, w, geo, off)).lower(x, w).as_text()


def test_shard_map_batch_split_matches_numpy():
  from jax.sharding import Mesh, PartitionSpec as P
  devices = jax.devices()[:2]
  if len(devices) < 2:
    pytest.skip("needs 2 devices")
  mesh = Mesh(np.array(devices), ("data",))
  r = np.random.default_rng(4)
  x = r.standard_normal((4, 10, 10, 40)).astype(np.float32)
  w = (r.standard_normal((3, 3, 40, 48)) / 19).astype(np.float32)
  geo = _geo((2, 10, 10, 40), w.shape, 1, "SAME")
  assert auto.conv_route(geo, batch=2) == "winograd"
  f = jax.shard_map(lambda w, x: auto.conv_auto(x, w, geo), mesh=mesh, in_specs=(P(), P("data")),
                    out_specs=P("data"))
  dw = jax.jit(jax.grad(lambda w: jnp.sum(f(w, x) ** 2)))(w)
  want = numpy_weight_grad(x, 2 * reference.conv(x, w, stride=1, padding="SAME"), w.shape,
                           stride=1, padding="SAME", dilation=1)
  _close(dw, want)
