"""The C++ direct conv kernels (`jaxseg.ops.cpu.direct`) against the NumPy reference.

Forward, input gradient and weight gradient on geometries that reach every
code path of `_cpu_conv.cc`: left/right edge pixels and top/bottom rows (pads
of every size, VALID, explicit asymmetric pads), strides 1-3, output channel
counts that are and are not multiples of 16 (1, 4, 16, 20, 36, 48, 64, 100:
each block kind 16/32/48/64 and a tail), one input channel, more taps per
kernel row than a weight-gradient group (16), images narrower than a strip,
and a batch of rows split into parts over threads. Then the models' layers:
the `auto` route sends the U-Net's and the FCN's small-channel layers here,
and a step's gradients must match XLA's. The build: a missing or failing
compiler leaves XLA's convolution in place.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import reference
from jaxseg.errors import ConfigError
from jaxseg.ops import auto
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.cpu import build, direct

from test_fast_paths import numpy_input_grad, numpy_weight_grad


def _machine_can() -> bool:
  try:
    flags = open("/proc/cpuinfo").read()
  except OSError:
    return False
  return " avx512f" in flags and any(shutil.which(c) for c in ("g++", "c++", "clang++"))


pytestmark = pytest.mark.skipif(not _machine_can(), reason="needs AVX-512 and a C++ compiler")

TOL = dict(atol=2e-4, rtol=2e-4)

# x shape, w shape, stride, padding
CASES = [
    ((2, 9, 11, 16), (3, 3, 16, 16), 1, "SAME"),          # U-Net block, odd sizes, strips + remainders
    ((1, 7, 30, 32), (3, 3, 32, 48), 1, "SAME"),          # 48: one 48-channel block (3 vectors)
    ((2, 6, 19, 3), (3, 3, 3, 64), 1, "SAME"),            # 64: one 64-channel block
    ((1, 5, 13, 1), (3, 3, 1, 16), 1, "SAME"),            # one input channel (first layer)
    ((2, 12, 12, 1), (5, 5, 1, 100), 2, "SAME"),          # the lab FCN's first conv: stride 2, 64+32+4 channels
    ((1, 11, 10, 2), (5, 5, 2, 20), 3, "SAME"),           # stride 3, tail of 4
    ((1, 8, 9, 5), (3, 3, 5, 36), 1, "VALID"),            # no padding; 32 + tail
    ((1, 9, 7, 4), (3, 5, 4, 4), 1, [(2, 0), (1, 3)]),    # explicit, asymmetric pads; 4 channels only
    ((1, 6, 6, 7), (5, 3, 7, 1), 2, [(3, 3), (0, 2)]),    # pads wider than the kernel reach, 1 channel out
    ((1, 4, 3, 24), (3, 3, 24, 16), 1, "SAME"),           # image narrower than a strip; 72 taps per row
    ((3, 5, 40, 8), (1, 1, 8, 32), 1, "SAME"),            # 1x1
    ((2, 6, 7, 64), (3, 3, 64, 48), 1, "SAME"),           # kernel over 64 KiB: one dW part per thread
    ((1, 7, 8, 3), (1, 1, 3, 16), 2, "SAME"),             # kernel < stride: phases with no taps
    ((2, 10, 9, 6), (2, 2, 6, 20), 3, "VALID"),           # 2x2/3: a third of the phases empty
    # C_in >= 16: the strided dx by stride phases on the kernel (below 16, XLA's dx)
    ((2, 11, 12, 16), (5, 5, 16, 32), 2, "SAME"),         # the FCN's conv2 in small
    ((1, 10, 9, 20), (3, 3, 20, 16), 3, [(1, 2), (0, 1)]),  # stride 3, explicit pads, dx tail of 4
    ((1, 9, 8, 16), (1, 1, 16, 16), 2, "SAME"),           # 1x1/2: phases with no taps
    # 3-D: a depth loop around the same kernel rows (kernel row = (kz, kh))
    ((2, 5, 6, 7, 16), (3, 3, 3, 16, 16), 1, "SAME"),     # the 3-D U-Net's block, odd sizes
    ((1, 6, 5, 9, 1), (3, 3, 3, 1, 20), 1, "SAME"),       # one input channel (first layer), tail of 4
    ((1, 7, 6, 8, 16), (3, 3, 3, 16, 36), 2, "SAME"),     # strided: dx by 8 stride phases
    ((2, 4, 5, 6, 3), (2, 3, 2, 3, 17), (2, 1, 2), [(0, 1), (1, 1), (1, 0)]),  # mixed strides, explicit pads
    ((1, 9, 8, 7, 20), (3, 3, 3, 20, 16), 2, "VALID"),
    ((2, 6, 6, 6, 8), (1, 1, 1, 8, 16), 1, "SAME"),       # 1x1x1
    # deep layer: kernel large next to the data, so dW is cut by kernel entries; 64 + 16 output
    # channels (tap groups of 6 and of 16); forward kernel rows in two chunks (the second adds)
    ((2, 3, 4, 5, 40), (3, 3, 3, 40, 80), 1, "SAME"),
    ((1, 2, 3, 2, 100), (3, 3, 3, 100, 20), 1, "SAME"),    # kernel rows in 3 chunks; 16 + tail of 4
    ((1, 6, 20, 22, 32), (3, 3, 3, 32, 24), 1, "SAME"),    # dW cut by rows, kernel over 64 KiB
    ((1, 3, 4, 5, 24), (3, 3, 3, 24, 100), 1, "SAME"),     # dW by units: last block 36 = 3 vectors, tail 4
    ((1, 3, 4, 5, 7), (3, 3, 3, 7, 52), 1, "SAME"),        # dW by units: 21 taps a row, a partial group of 3
    ((1, 8, 8, 7, 16), (3, 3, 3, 16, 16), 2, "VALID"),     # leftover depth, height, width: no copy
    ((1, 6, 7, 16), (3, 3, 16, 20), 1, [(3, 3), (0, 2)]),  # pads beyond the kernel: dx crops (negative pads)
    # at most 16 output channels: the forward (and dx) in sliding strips, dW with input channels in lanes
    ((2, 7, 53, 16), (3, 3, 16, 16), 1, "SAME"),          # rows of 53: strips of 24 + 24 + 4 + 1
    ((1, 5, 7, 30, 32), (3, 3, 3, 32, 13), 1, "SAME"),    # dW: 2 blocks of 16 input channels, 8 + 5 outputs
    ((1, 2, 3, 4, 64), (3, 3, 3, 64, 16), 1, "SAME"),     # dW cut by units (kernel large next to the data)
    ((1, 3, 9, 16), (3, 3, 16, 1), 1, "SAME"),            # one output channel; dx has 16 (sliding strips)
]
IDS = [f"{'x'.join(map(str, x[1:]))}-{'x'.join(map(str, w[:-2]))}->{w[-1]}/{s}" for x, w, s, _ in CASES]


@pytest.fixture(scope="module", autouse=True)
def _kernels():
  assert build.available(), "the C++ kernels did not build on a machine that can build them"


def _data(x_shape, w_shape, seed=0):
  r = np.random.default_rng(seed)
  return (r.standard_normal(x_shape).astype(np.float32),
          (r.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:-1]))).astype(np.float32))


@pytest.mark.parametrize("x_shape,w_shape,stride,padding", CASES, ids=IDS)
def test_forward_and_gradients_match_numpy(x_shape, w_shape, stride, padding):
  x, w = _data(x_shape, w_shape)
  f = jax.jit(lambda x, w: direct.conv(x, w, stride=stride, padding=padding))
  y = np.asarray(f(x, w))
  ref = reference.conv(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding)
  np.testing.assert_allclose(y, ref, **TOL)
  g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
  _, vjp = jax.vjp(lambda x, w: direct.conv(x, w, stride=stride, padding=padding), x, w)
  dx, dw = jax.jit(vjp)(g)
  np.testing.assert_allclose(
      dw, numpy_weight_grad(x, g, w_shape, stride=stride, padding=padding, dilation=1), **TOL)
  np.testing.assert_allclose(
      dx, numpy_input_grad(g, w, x_shape, stride=stride, padding=padding, dilation=1), **TOL)


def test_every_thread_part_and_edge_is_written():
  # Many rows (parts over threads) and an input of ones: each output pixel is
  # the number of in-image taps times the kernel sum, so a skipped edge or part shows.
  x = np.ones((4, 33, 35, 16), np.float32)
  w = np.ones((3, 3, 16, 32), np.float32)
  y = np.asarray(jax.jit(direct.conv)(x, w))
  rows = np.array([2] + [3] * 31 + [2])
  cols = np.array([2] + [3] * 33 + [2])
  expected = (rows[:, None] * cols[None, :] * 16).astype(np.float32)
  np.testing.assert_array_equal(y, np.broadcast_to(expected[None, :, :, None], y.shape))


def test_weight_gradient_is_deterministic():
  x, w = _data((8, 20, 20, 16), (3, 3, 16, 16))
  g = np.random.default_rng(2).standard_normal((8, 20, 20, 16)).astype(np.float32)
  f = jax.jit(lambda x, g: jax.vjp(lambda w: direct.conv(x, w), w)[1](g)[0])
  first = np.asarray(f(x, g))
  for _ in range(3):
    np.testing.assert_array_equal(np.asarray(f(x, g)), first)


def test_rejects_what_it_cannot_do():
  x = jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ConfigError):
    direct.conv(x.astype(jnp.float16), jnp.zeros((3, 3, 4, 16), jnp.float16))
  with pytest.raises(ConfigError):
    direct.conv(jnp.zeros((1, 8, 4)), jnp.zeros((3, 4, 16)))   # 1-D


def test_models_layers_route_here_and_match_xla():
  # The U-Net's full-resolution layer and the FCN's first conv take the kernels...
  unet = conv_geometry((8, 256, 256, 16), (3, 3, 16, 16), stride=1, padding="SAME", dilation=1, groups=1)
  fcn1 = conv_geometry((8, 256, 256, 1), (5, 5, 1, 100), stride=2, padding="SAME", dilation=1, groups=1)
  deep = conv_geometry((8, 16, 16, 200), (3, 3, 200, 300), stride=1, padding="SAME", dilation=1, groups=1)
  assert auto.conv_route(unet, batch=8) == auto.conv_route(fcn1, batch=8) == "cpu_direct"
  assert auto.conv_route(deep, batch=8) == "winograd"          # the FCN's deep layers: not these kernels
  # ... and the auto conv's values and gradients are XLA's on such a layer.
  x, w = _data((2, 64, 64, 16), (3, 3, 16, 32))
  geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)
  assert auto.conv_route(geo, batch=2) == "cpu_direct"
  xla = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)))
  tuned = jax.jit(jax.value_and_grad(loss(lambda x, w: auto.conv_auto(x, w, geo)), (0, 1)))
  plain = jax.jit(jax.value_and_grad(loss(xla), (0, 1)))
  text = jax.jit(lambda x, w: auto.conv_auto(x, w, geo)).lower(x, w).as_text()
  assert "jaxseg_conv_forward" in text
  (v1, (dx1, dw1)), (v2, (dx2, dw2)) = tuned(x, w), plain(x, w)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  np.testing.assert_allclose(dx1, dx2, **TOL)
  np.testing.assert_allclose(dw1, dw2, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("compiler", ["missing", "failing"])
def test_build_failure_falls_back_with_a_warning(tmp_path, caplog, compiler):
  if compiler == "failing":
    cxx = tmp_path / "cxx"
    cxx.write_text("#!/bin/sh\necho 'error: this compiler fails' >&2\nexit 1\n")
    cxx.chmod(0o755)
  else:
    cxx = tmp_path / "no-such-compiler"
  options = build.BuildOptions(str(cxx), tmp_path / "cache")
  with pytest.raises(RuntimeError, match="fails" if compiler == "failing" else "no C\\+\\+ compiler"):
    build.build(options)
  with caplog.at_level("WARNING", logger="jaxseg.ops.cpu"):
    assert build.load(options) is None
  assert "unavailable" in caplog.text
  assert not list((tmp_path / "cache").glob("*.so"))      # no half-written library left behind
  # Without the kernels the auto route keeps XLA's conv for the layers that would take them.
  geo = conv_geometry((8, 256, 256, 16), (3, 3, 16, 16), stride=1, padding="SAME", dilation=1, groups=1)
  assert auto.conv_route(geo, batch=8, kernels=False) == "xla"


def test_build_compiles_into_the_cache_once(tmp_path):
  # A fresh cache directory gets one library named by the source's key; a second build reuses it.
  options = build.BuildOptions(build.default_options().compiler, tmp_path / "cache")
  path = build.build(options)
  assert path.parent == tmp_path / "cache" and path.exists()
  mtime = path.stat().st_mtime_ns
  assert build.build(options) == path and path.stat().st_mtime_ns == mtime


def test_shard_map_batch_split_matches_single_device():
  from jax.sharding import Mesh, PartitionSpec as P
  devices = jax.devices()[:2]
  if len(devices) < 2:
    pytest.skip("needs 2 devices")
  mesh = Mesh(np.array(devices), ("data",))
  x, w = _data((4, 64, 64, 16), (3, 3, 16, 16))
  geo = conv_geometry((2, 64, 64, 16), w.shape, stride=1, padding="SAME", dilation=1, groups=1)
  assert auto.conv_route(geo, batch=2) == "cpu_direct"

  f = jax.shard_map(lambda w, x: auto.conv_auto(x, w, geo), mesh=mesh, in_specs=(P(), P("data")),
                    out_specs=P("data"))
  dw = jax.jit(jax.grad(lambda w: jnp.sum(f(w, x) ** 2)))(w)
  ref_dw = numpy_weight_grad(x, 2 * reference.conv(x, w, stride=1, padding="SAME"), w.shape,
                             stride=1, padding="SAME", dilation=1)
  np.testing.assert_allclose(dw, ref_dw, atol=1e-2, rtol=1e-4)


@pytest.mark.parametrize("name", ["fcn", "unet_small"])
def test_model_gradients_match_pure_xla(name):
  # The whole model's loss gradient on "auto" (first layers and few-channel layers on the C++
  # kernels, stride-phase dx, Winograd for the many-channel ones) vs the same model on "lax"
  # (XLA's convs and autodiff everywhere). Winograd rounds differently (1e-6 to 1e-5 of a layer's
  # scale); through the whole network the gradients agree within 1e-5 of each leaf's scale.
  from jaxseg import losses, models
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 1))
  y = (jax.random.uniform(jax.random.key(1), (2, 64, 64)) > 0.7).astype(jnp.int32)
  grads, texts = {}, {}
  for impl in ("auto", "lax"):
    m = models.create(name, conv_impl=impl)
    params = m.init(jax.random.key(2), x)
    texts[impl] = jax.jit(lambda p: m.apply(p, x)).lower(params).as_text()
    grads[impl] = jax.jit(jax.grad(lambda p: losses.softmax_cross_entropy(m.apply(p, x), y)))(params)
  assert "jaxseg_conv_forward" in texts["auto"] and "jaxseg_winograd_transform" in texts["auto"]
  assert "custom_call" not in texts["lax"]
  for a, b in zip(jax.tree.leaves(grads["auto"]), jax.tree.leaves(grads["lax"])):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-8, rtol=1e-4)


def test_input_gradient_kernel_rejects_mismatched_channels():
  # The kernel flips w itself; a cotangent whose channels are not w's C_out is an error, not a read
  # past the end of w.
  geo = conv_geometry((1, 8, 8, 4), (3, 3, 4, 16), stride=1, padding="SAME", dilation=1, groups=1)
  dgeo = geo._replace(pads=((1, 1), (1, 1)), cin=16, cout=4)
  with pytest.raises(Exception, match="inconsistent shapes"):
    jax.block_until_ready(direct.flipped_forward(jnp.zeros((1, 8, 8, 8)), jnp.zeros((3, 3, 4, 16)), dgeo))


def test_transposed_conv_kernel_rejects_inconsistent_shapes():
  # An output that is not stride x the input, or a kernel matrix of the wrong size, is an error,
  # not a write past the end of the output.
  call = lambda y, wk, z_shape: jax.block_until_ready(jax.ffi.ffi_call(
      "jaxseg_conv_transpose_forward", jax.ShapeDtypeStruct(z_shape, jnp.float32))(
          y, wk, sd=np.int64(1), sh=np.int64(2), sw=np.int64(2), pd=np.int64(0), ph=np.int64(0), pw=np.int64(0)))
  y = jnp.ones((1, 3, 4, 8))
  call(y, jnp.ones((2, 8, 16)), (1, 6, 8, 5))                     # consistent: runs
  with pytest.raises(Exception, match="inconsistent shapes"):
    call(y, jnp.ones((2, 8, 16)), (1, 7, 8, 5))                   # not 2 x the input's height
  with pytest.raises(Exception, match="inconsistent shapes"):
    call(y, jnp.ones((2, 8, 16)), (1, 6, 8, 9))                   # 2 x 9 columns > the kernel's 16
  with pytest.raises(Exception, match="inconsistent shapes"):
    call(y, jnp.ones((4, 8, 16)), (1, 6, 8, 5))                   # 4 phase matrices for 2 phases


def test_transposed_conv_kernel_matches_numpy_and_is_not_the_phase_form():
  # The up-conv route's own kernel against NumPy, with odd sizes, two 64-column blocks (2 x 40 = 80
  # columns: 64 + 16) and a batch of 3, gradients included; and the route is the kernel's.
  y_shape, w_shape = (3, 3, 5, 7, 24), (2, 2, 2, 40, 24)
  y, w = _data(y_shape, w_shape, seed=5)
  geo = conv_geometry((3, 6, 10, 14, 40), w_shape, stride=2, padding="VALID", dilation=1, groups=1)
  assert direct.transpose_supports(geo)
  assert auto.conv_transpose_route(geo, kernels=True) == "cpu_direct"
  z, vjp = jax.vjp(lambda y, w: direct.conv_transpose_geo(y, w, geo), y, w)
  np.testing.assert_allclose(z, reference.conv_transpose(y.astype(np.float64), w.astype(np.float64), stride=2,
                                                        padding="VALID"), **TOL)
  g = np.random.default_rng(6).standard_normal(z.shape).astype(np.float32)
  dy, dw = jax.jit(vjp)(g)
  np.testing.assert_allclose(dy, reference.conv(g.astype(np.float64), w.astype(np.float64), stride=2,
                                                padding="VALID"), **TOL)
  np.testing.assert_allclose(dw, numpy_weight_grad(g, y, w_shape, stride=2, padding="VALID", dilation=1), **TOL)
