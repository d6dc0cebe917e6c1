"""Winograd F(2x2, 3x3) over the in-plane taps of 3x3x3 convs (`jaxseg.ops.cpu.winograd3d`) against NumPy.

The transform matrices against the 1-D correlation they stand for (float64,
independent of the C++); each C++ tile transform against its NumPy form and
each transpose against it by the dot-product identity; the kernel transforms
(U, U^T per position, G^T dU G) against einsum; then the whole conv, forward
and both gradients, against the NumPy reference on odd volumes (planes with
odd sides: a tile past the edge; one plane; one voxel) and channel counts that
are not multiples of 16; which layers `auto` sends here under its policy.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import reference
from jaxseg.ops import DEFAULT_POLICY, auto
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.cpu import build, winograd3d as w3

from test_cpu_direct import _machine_can
from test_winograd import _close
from test_fast_paths import numpy_input_grad, numpy_weight_grad

pytestmark = pytest.mark.skipif(not _machine_can(), reason="needs AVX-512 and a C++ compiler")


@pytest.fixture(scope="module", autouse=True)
def _kernels():
  assert build.available(), "the C++ kernels did not build on a machine that can build them"


def test_transform_matrices_compute_a_correlation():
  # F(2, 3): y[i] = sum_j d[i + j] g[j], 2 outputs from 4 inputs; the 2-D form is its square.
  r = np.random.default_rng(0)
  for _ in range(5):
    d, g = r.standard_normal(4), r.standard_normal(3)
    np.testing.assert_allclose(w3.AT @ ((w3.G @ g) * (w3.BT @ d)), [d[0:3] @ g, d[1:4] @ g], atol=1e-12)
  d, g = r.standard_normal((4, 4)), r.standard_normal((3, 3))
  want = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])
  got = w3.AT @ ((w3.G @ g @ w3.G.T) * (w3.BT @ d @ w3.BT.T)) @ w3.AT.T
  np.testing.assert_allclose(got, want, atol=1e-12)


def _numpy_input_tiles(x):
  """(16, N*(D+2)*T, C) in float64: B^T d B of the 4x4 tiles at stride 2 (one pixel of zeros before),
  with a plane of zeros before and after each volume."""
  n, d, h, w, c = x.shape
  th, tw = -(-h // 2), -(-w // 2)
  xp = np.zeros((n, d + 2, 2 * th + 2, 2 * tw + 2, c))
  xp[:, 1:d + 1, 1:h + 1, 1:w + 1] = x
  v = np.zeros((4, 4, n, d + 2, th, tw, c))
  for i in range(th):
    for j in range(tw):
      tile = xp[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4]                 # (n, d+2, 4, 4, c)
      v[:, :, :, :, i, j] = np.einsum("ka,nzabc,lb->klnzc", w3.BT, tile, w3.BT)
  return v.reshape(16, n * (d + 2) * th * tw, c)


def _interior(t, shape):
  """The rows of the volume's planes of depth-padded tiles t (16, N*(D+2)*T, C): (16, N*D*T, C)."""
  n, d, h, w = shape[:4]
  return t.reshape(16, n, d + 2, -1, t.shape[-1])[:, :, 1:d + 1].reshape(16, -1, t.shape[-1])


def _numpy_output_tiles(m, y_shape):
  n, d, h, w, k = y_shape
  th, tw = -(-h // 2), -(-w // 2)
  m = m.reshape(4, 4, n, d, th, tw, k)
  y = np.einsum("ia,abnztsk,jb->nztisjk", w3.AT, m, w3.AT).reshape(n, d, 2 * th, 2 * tw, k)
  return y[:, :, :h, :w]


@pytest.mark.parametrize("shape", [(1, 3, 5, 7, 20), (2, 1, 4, 4, 16), (1, 2, 1, 1, 3), (2, 4, 6, 3, 33)])
def test_tile_transforms_and_their_transposes(shape):
  r = np.random.default_rng(1)
  x = r.standard_normal(shape).astype(np.float32)
  v = np.asarray(jax.jit(w3.input_tiles)(x))
  _close(v, _numpy_input_tiles(x.astype(np.float64)), 1e-6)
  vi = _interior(v, shape)
  dv = r.standard_normal(vi.shape).astype(np.float32)
  dx = np.asarray(jax.jit(lambda a: w3.input_tiles_t(a, shape))(dv))
  # <input_tiles(x) on the volume's planes, dv> == <x, input_tiles_t(dv)>
  np.testing.assert_allclose(np.vdot(vi.astype(np.float64), dv), np.vdot(x.astype(np.float64), dx), rtol=1e-5)
  y_shape = (*shape[:4], 18)
  m = r.standard_normal((16, vi.shape[1], 18)).astype(np.float32)
  y = np.asarray(jax.jit(lambda a: w3.output_tiles(a, y_shape))(m))
  _close(y, _numpy_output_tiles(m.astype(np.float64), y_shape), 1e-6)
  dy = r.standard_normal(y_shape).astype(np.float32)
  dm = np.asarray(jax.jit(w3.output_tiles_t)(dy))
  assert dm.shape == v.shape[:2] + (18,)
  np.testing.assert_allclose(np.vdot(y.astype(np.float64), dy), np.vdot(m.astype(np.float64), _interior(dm, shape)),
                             rtol=1e-5)
  # the padding planes are zeros (the products read them as the depth conv's pads)
  assert not dm.reshape(16, shape[0], shape[1] + 2, -1, 18)[:, :, [0, -1]].any()


@pytest.mark.parametrize("ci,co", [(20, 36), (16, 16), (3, 40)])
def test_kernel_transforms(ci, co):
  r = np.random.default_rng(2)
  w = r.standard_normal((3, 3, 3, ci, co)).astype(np.float32)
  u64 = np.einsum("ai,zijco,bj->abzco", w3.G, w.astype(np.float64), w3.G).reshape(16, 3 * ci, co)
  u = np.asarray(jax.jit(w3.transform_kernel)(w))
  assert u.shape == (16, 3 * ci, -(-co // 16) * 16)
  _close(u[:, :, :co], u64, 1e-6)
  assert not u[:, :, co:].any()
  ut = np.asarray(jax.jit(w3.transform_kernel_tt)(w))
  assert ut.shape == (16, 3 * co, -(-ci // 16) * 16)
  want_t = u64.reshape(16, 3, ci, co)[:, ::-1].transpose(0, 1, 3, 2).reshape(16, 3 * co, ci)
  _close(ut[:, :, :ci], want_t, 1e-6)
  assert not ut[:, :, ci:].any()
  du = r.standard_normal((16, 3 * ci, co)).astype(np.float32)
  want = np.einsum("ai,abzco,bj->zijco", w3.G, du.astype(np.float64).reshape(4, 4, 3, ci, co), w3.G)
  _close(jax.jit(w3.transform_kernel_t)(du), want, 1e-6)


@pytest.mark.parametrize("n,d,tiles,ci,co", [(2, 3, 5, 20, 36), (1, 1, 1, 16, 17), (2, 2, 4, 40, 130)])
def test_depth_products_match_numpy(n, d, tiles, ci, co):
  # Each position's (3, 1, 1) depth conv with no pads over its depth-padded planes. The padding planes
  # hold random numbers here: the forward and the input gradient must read them as they are, the
  # weight gradient must not read the cotangent's.
  r = np.random.default_rng(6)
  v = r.standard_normal((16, n, d + 2, tiles, ci)).astype(np.float32)
  u = r.standard_normal((16, 3, ci, co)).astype(np.float32)
  dm = r.standard_normal((16, n, d + 2, tiles, co)).astype(np.float32)
  ut = r.standard_normal((16, 3, co, ci)).astype(np.float32)
  pad = lambda a: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, -a.shape[-1] % 16)])
  run = lambda a, b, shape, kind: np.asarray(jax.jit(lambda a, b: w3.product(a, b, shape, n, d, kind))(a, b))
  v64, u64, dm64, ut64 = (a.astype(np.float64) for a in (v, u, dm, ut))
  m = run(v.reshape(16, -1, ci), pad(u.reshape(16, 3 * ci, co)), (16, n * d * tiles, co), 0)
  want = sum(np.einsum("pnztc,pco->pnzto", v64[:, :, kz:kz + d], u64[:, kz]) for kz in range(3))
  _close(m, want.reshape(16, -1, co), 1e-5)
  dv = run(dm.reshape(16, -1, co), pad(ut.reshape(16, 3 * co, ci)), (16, n * d * tiles, ci), 1)
  want = sum(np.einsum("pnzto,poc->pnztc", dm64[:, :, kz:kz + d], ut64[:, kz]) for kz in range(3))
  _close(dv, want.reshape(16, -1, ci), 1e-5)
  du = run(v.reshape(16, -1, ci), dm.reshape(16, -1, co), (16, 3 * ci, co), 2)
  want = np.stack([np.einsum("pnztc,pnzto->pco", v64[:, :, kz:kz + d], dm64[:, :, 1:d + 1]) for kz in range(3)], 1)
  _close(du, want.reshape(16, 3 * ci, co), 1e-5)


CASES = [
    ((2, 4, 8, 8, 32), 48),     # the deepest level in small: whole tiles
    ((1, 3, 5, 7, 20), 36),     # odd sides (tiles past the edge), channel tails of 4
    ((1, 1, 2, 2, 16), 17),     # one plane, one tile; an output tail of 1
    ((1, 2, 1, 1, 40), 33),     # one pixel per plane
    ((2, 5, 3, 4, 64), 128),    # 128 output channels: two column blocks of the products
    ((1, 5, 9, 11, 48), 32),    # 5 x 6 tiles, the last row and column half outside: bands of 2, 2, 1 rows
]


# The fused form with its bands of tile rows (one band a volume at the default size on these small
# volumes; band_bytes=1: one tile row a band, so neighbouring bands add into shared rows of dx, in two
# rounds), and the form composed of the separate pieces.
FORMS = {"fused": w3.conv3x3x3, "fused_row_bands": lambda x, w: w3.conv3x3x3(x, w, 1),
         # two tile rows a band on the last case (16 positions x 7 padded planes x 6 tiles x 48 channels)
         "fused_2_row_bands": lambda x, w: w3.conv3x3x3(x, w, 2 * 16 * 7 * 6 * 48 * 4),
         "composed": w3.conv3x3x3_composed}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("x_shape,cout", CASES)
def test_conv_and_gradients_match_numpy(x_shape, cout, form):
  r = np.random.default_rng(3)
  x = r.standard_normal(x_shape).astype(np.float32)
  w_shape = (3, 3, 3, x_shape[-1], cout)
  w = (r.standard_normal(w_shape) / np.sqrt(27 * x_shape[-1])).astype(np.float32)
  geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)
  assert w3.supports(geo)
  f = FORMS[form]
  y, vjp = jax.vjp(f, x, w)
  _close(y, reference.conv(x.astype(np.float64), w.astype(np.float64), stride=1, padding="SAME"), rel=1e-5)
  g = r.standard_normal(y.shape).astype(np.float32)
  dx, dw = jax.jit(vjp)(g)
  _close(dw, numpy_weight_grad(x, g, w_shape, stride=1, padding="SAME", dilation=1), rel=1e-5)
  _close(dx, numpy_input_grad(g, w, x_shape, stride=1, padding="SAME", dilation=1), rel=1e-5)


def test_auto_sends_the_3d_layers_with_16_channels_here():
  geo = lambda x, w: conv_geometry(x, w, stride=1, padding="SAME", dilation=1, groups=1)
  deep = geo((2, 4, 8, 8, 128), (3, 3, 3, 128, 128))
  assert auto.conv_route(deep, batch=2) == "winograd3d_products"
  assert auto.conv_route(deep, batch=4) == "winograd3d_products"           # 1024 voxels: the products' limit
  assert auto.conv_route(deep, batch=5) == "winograd3d"
  assert auto.conv_route(geo((2, 8, 16, 16, 64), (3, 3, 3, 64, 64)), batch=2) == "winograd3d"
  assert auto.conv_route(geo((2, 32, 64, 64, 16), (3, 3, 3, 16, 16)), batch=2) == "winograd3d"
  assert auto.conv_route(geo((2, 32, 64, 64, 1), (3, 3, 3, 1, 16)), batch=2) == "cpu_direct"     # a first layer
  assert auto.conv_route(geo((2, 16, 32, 32, 16), (3, 3, 3, 16, 8)), batch=2) == "cpu_direct"    # 8 output channels
  assert auto.conv_route(geo((2, 32, 64, 64, 16), (1, 1, 1, 16, 2)), batch=2) == "cpu_direct"    # not 3x3x3
  assert auto.conv_route(deep, batch=2, policy=dataclasses.replace(DEFAULT_POLICY, winograd_3d=False)) == "cpu_direct"
  products = dataclasses.replace(DEFAULT_POLICY, winograd_3d_products_max_voxels=2 * 8 * 16 * 16)
  assert auto.conv_route(geo((2, 8, 16, 16, 64), (3, 3, 3, 64, 64)), batch=2, policy=products) == "winograd3d_products"
  strided = conv_geometry((2, 4, 8, 8, 128), (3, 3, 3, 128, 128), stride=2, padding="SAME", dilation=1, groups=1)
  assert not w3.supports(strided) and auto.conv_route(strided, batch=2) not in ("winograd3d", "winograd3d_products")
  assert auto.conv_route(deep, batch=2, platform="cuda") == "xla"


@pytest.mark.parametrize("x_shape,route", [((2, 4, 6, 6, 32), "winograd3d_products"), ((2, 5, 11, 10, 16), "winograd3d")])
def test_auto_conv_of_a_3d_layer_matches_xla(x_shape, route):
  from jaxseg import ops
  r = np.random.default_rng(4)
  x = r.standard_normal(x_shape).astype(np.float32)
  w = (r.standard_normal((3, 3, 3, x_shape[-1], 40)) / np.sqrt(27 * x_shape[-1])).astype(np.float32)
  assert ops.conv_route(x.shape, w.shape, platform="cpu") == route
  loss = lambda impl: (lambda x, w: jnp.sum(ops.conv(x, w, stride=1, padding="SAME", impl=impl) ** 2))
  (ya, ga), (yl, gl) = (jax.jit(jax.value_and_grad(loss(i), argnums=(0, 1)))(x, w) for i in ("auto", "lax"))
  _close(ya, yl, rel=1e-5)
  for a, b in zip(ga, gl):
    _close(a, b, rel=1e-5)


def test_rejects_inconsistent_shapes():
  with pytest.raises(Exception, match="inconsistent shapes"):
    jax.block_until_ready(w3._transform(jnp.zeros((1, 2, 4, 4, 8)), (16, 7, 24), 0))
  with pytest.raises(Exception, match="inconsistent shapes"):
    jax.block_until_ready(w3._kernel_call(jnp.zeros((3, 3, 2, 8, 8)), (16, 24, 16), 0))
  with pytest.raises(Exception, match="inconsistent shapes"):   # 7 rows are not whole padded volumes
    jax.block_until_ready(w3.product(jnp.zeros((16, 7, 16)), jnp.zeros((16, 48, 16)), (16, 3, 16), 1, 1, 0))
  with pytest.raises(Exception, match="inconsistent shapes"):   # the kernel is not 3 taps of 16 channels
    jax.block_until_ready(w3.product(jnp.zeros((16, 6, 16)), jnp.zeros((16, 32, 16)), (16, 2, 16), 1, 1, 0))


@pytest.mark.parametrize("x_shape,route", [((4, 2, 4, 5, 32), "winograd3d_products"), ((4, 6, 11, 10, 16), "winograd3d")])
def test_shard_map_over_two_devices_matches_one_device(x_shape, route):
  # The batch split over 2 devices (shard_map), the kernel replicated: the same values and
  # gradients as one device (dW summed over the devices by the transpose of the kernel's cast to
  # varying), as for the 2-D routes in test_auto.py.
  from jax.sharding import Mesh, PartitionSpec as P
  from jaxseg import ops
  if len(jax.devices()) < 2:
    pytest.skip("needs 2 devices")
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  r = np.random.default_rng(5)
  x = r.standard_normal(x_shape).astype(np.float32)
  ci = x_shape[-1]
  w = (r.standard_normal((3, 3, 3, ci, 48)) / np.sqrt(27 * ci)).astype(np.float32)
  assert ops.conv_route((2, *x.shape[1:]), w.shape, platform="cpu") == route      # one device's half
  loss = lambda x, w: jnp.sum(jnp.sin(ops.conv(x, w, stride=1, padding="SAME", impl="auto")))
  def per_device(x, w):
    l, g = jax.value_and_grad(loss, argnums=(0, 1))(x, w)
    return jax.lax.psum(l, "data"), g
  split = jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P()), out_specs=(P(), (P("data"), P())))
  (l2, (dx2, dw2)) = jax.jit(split)(x, w)
  (l1, (dx1, dw1)) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  _close(dx2, dx1, rel=1e-5)
  _close(dw2, dw1, rel=1e-5)
