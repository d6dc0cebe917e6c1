"""The C++ direct conv kernels (`jaxseg.ops.cpu_conv`) against the NumPy reference.

Forward, input gradient and weight gradient on geometries that reach every
code path of `_cpu_conv.cc`: left/right edge pixels and top/bottom rows (pads
of every size, VALID, explicit asymmetric pads), strides 1-3, output channel
counts that are and are not multiples of 16 (1, 4, 16, 20, 36, 48, 64, 100:
each block kind 16/32/48/64 and a tail), one input channel, more taps per
kernel row than a weight-gradient group (16), images narrower than a strip,
and a batch of rows split into parts over threads. Then the models' layers:
`conv_lax_tuned` routes the U-Net's and the FCN's small-channel layers here,
and a step's gradients must match XLA's.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import reference
from jaxseg.errors import ConfigError
from jaxseg.ops import cpu_conv
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.conv import conv_lax_tuned

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
]
IDS = [f"{x[1]}x{x[2]}x{x[3]}-{w[0]}x{w[1]}->{w[3]}/{s}" for x, w, s, _ in CASES]


@pytest.fixture(scope="module", autouse=True)
def _kernels():
  assert cpu_conv.available(), "the C++ kernels did not build on a machine that can build them"


def _data(x_shape, w_shape, seed=0):
  r = np.random.default_rng(seed)
  return (r.standard_normal(x_shape).astype(np.float32),
          (r.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(np.float32))


@pytest.mark.parametrize("x_shape,w_shape,stride,padding", CASES, ids=IDS)
def test_forward_and_gradients_match_numpy(x_shape, w_shape, stride, padding):
  x, w = _data(x_shape, w_shape)
  f = jax.jit(lambda x, w: cpu_conv.conv(x, w, stride=stride, padding=padding))
  y = np.asarray(f(x, w))
  ref = reference.conv(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding)
  np.testing.assert_allclose(y, ref, **TOL)
  g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
  _, vjp = jax.vjp(lambda x, w: cpu_conv.conv(x, w, stride=stride, padding=padding), x, w)
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
  y = np.asarray(jax.jit(cpu_conv.conv)(x, w))
  rows = np.array([2] + [3] * 31 + [2])
  cols = np.array([2] + [3] * 33 + [2])
  expected = (rows[:, None] * cols[None, :] * 16).astype(np.float32)
  np.testing.assert_array_equal(y, np.broadcast_to(expected[None, :, :, None], y.shape))


def test_weight_gradient_is_deterministic():
  x, w = _data((8, 20, 20, 16), (3, 3, 16, 16))
  g = np.random.default_rng(2).standard_normal((8, 20, 20, 16)).astype(np.float32)
  f = jax.jit(lambda x, g: jax.vjp(lambda w: cpu_conv.conv(x, w), w)[1](g)[0])
  first = np.asarray(f(x, g))
  for _ in range(3):
    np.testing.assert_array_equal(np.asarray(f(x, g)), first)


def test_rejects_what_it_cannot_do():
  x = jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ConfigError):
    cpu_conv.conv(x.astype(jnp.float16), jnp.zeros((3, 3, 4, 16), jnp.float16))
  with pytest.raises(ConfigError):
    cpu_conv.conv(jnp.zeros((1, 8, 8, 8, 4)), jnp.zeros((3, 3, 3, 4, 16)))   # 3-D


def test_models_layers_route_here_and_match_xla():
  # The U-Net's full-resolution layer and the FCN's first conv take the kernels...
  unet = conv_geometry((8, 256, 256, 16), (3, 3, 16, 16), stride=1, padding="SAME", dilation=1, groups=1)
  fcn1 = conv_geometry((8, 256, 256, 1), (5, 5, 1, 100), stride=2, padding="SAME", dilation=1, groups=1)
  deep = conv_geometry((8, 16, 16, 200), (3, 3, 200, 300), stride=1, padding="SAME", dilation=1, groups=1)
  assert cpu_conv.applies(unet) and cpu_conv.applies(fcn1)
  assert not cpu_conv.applies(deep)          # the FCN's deep layers stay with XLA
  # ... and conv_lax_tuned's values and gradients are XLA's on such a layer.
  x, w = _data((2, 64, 64, 16), (3, 3, 16, 32))
  geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)
  assert cpu_conv.applies(geo)
  xla = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)))
  tuned = jax.jit(jax.value_and_grad(loss(lambda x, w: conv_lax_tuned(x, w, geo)), (0, 1)))
  plain = jax.jit(jax.value_and_grad(loss(xla), (0, 1)))
  text = jax.jit(lambda x, w: conv_lax_tuned(x, w, geo)).lower(x, w).as_text()
  assert "jaxseg_conv_forward" in text
  (v1, (dx1, dw1)), (v2, (dx2, dw2)) = tuned(x, w), plain(x, w)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  np.testing.assert_allclose(dx1, dx2, **TOL)
  np.testing.assert_allclose(dw1, dw2, atol=1e-3, rtol=1e-4)


def test_switched_off_by_environment(monkeypatch):
  geo = conv_geometry((8, 256, 256, 16), (3, 3, 16, 16), stride=1, padding="SAME", dilation=1, groups=1)
  monkeypatch.setenv("JAXSEG_CPU_KERNELS", "0")
  assert not cpu_conv.enabled()
  monkeypatch.setattr(cpu_conv, "_state", {})      # forget the earlier build: available() looks again
  assert not cpu_conv.applies(geo)


@pytest.mark.parametrize("compiler", ["missing", "failing"])
def test_build_failure_falls_back_with_a_warning(monkeypatch, tmp_path, caplog, compiler):
  if compiler == "failing":
    cxx = tmp_path / "cxx"
    cxx.write_text("#!/bin/sh\necho 'error: this compiler fails' >&2\nexit 1\n")
    cxx.chmod(0o755)
  else:
    cxx = tmp_path / "no-such-compiler"
  monkeypatch.setenv("CXX", str(cxx))
  monkeypatch.setenv("JAXSEG_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(cpu_conv, "_state", {})
  with caplog.at_level("WARNING", logger="jaxseg.ops.cpu_conv"):
    assert cpu_conv.available() is False
  assert "unavailable" in caplog.text and ("fails" in caplog.text or "no C++ compiler" in caplog.text)
  assert not list((tmp_path / "cache").glob("*.so"))      # no half-written library left behind
  geo = conv_geometry((8, 256, 256, 16), (3, 3, 16, 16), stride=1, padding="SAME", dilation=1, groups=1)
  assert not cpu_conv.applies(geo)


def test_shard_map_batch_split_matches_single_device():
  from jax.sharding import Mesh, PartitionSpec as P
  devices = jax.devices()[:2]
  if len(devices) < 2:
    pytest.skip("needs 2 devices")
  mesh = Mesh(np.array(devices), ("data",))
  x, w = _data((4, 64, 64, 16), (3, 3, 16, 16))
  geo = conv_geometry((2, 64, 64, 16), w.shape, stride=1, padding="SAME", dilation=1, groups=1)
  assert cpu_conv.applies(geo)

  f = jax.shard_map(lambda w, x: conv_lax_tuned(x, w, geo), mesh=mesh, in_specs=(P(), P("data")),
                    out_specs=P("data"))
  dw = jax.jit(jax.grad(lambda w: jnp.sum(f(w, x) ** 2)))(w)
  ref_dw = numpy_weight_grad(x, 2 * reference.conv(x, w, stride=1, padding="SAME"), w.shape,
                             stride=1, padding="SAME", dilation=1)
  np.testing.assert_allclose(dw, ref_dw, atol=1e-2, rtol=1e-4)


def test_conv_grad_forward_by_the_kernel_when_switched_on(monkeypatch):
  from jaxseg.ops import conv_grad
  monkeypatch.setattr(conv_grad, "KERNEL_FORWARD", True)
  x, w = _data((2, 16, 16, 20), (5, 5, 20, 32))
  geo = conv_geometry(x.shape, w.shape, stride=2, padding="SAME", dilation=1, groups=1)
  assert conv_grad.applies(geo, 2) and not cpu_conv.applies(geo) and conv_grad.kernel_forward(geo, x.dtype)
  f = lambda x, w: conv_lax_tuned(x, w, geo)
  assert "jaxseg_conv_forward" in jax.jit(f).lower(x, w).as_text()
  np.testing.assert_allclose(jax.jit(f)(x, w), reference.conv(x, w, stride=2, padding="SAME"), **TOL)


@pytest.mark.parametrize("name", ["fcn", "unet_small"])
def test_model_gradients_match_pure_xla(name, monkeypatch):
  # The whole model's loss gradient with the kernels (first layers, stride-phase dx,
  # the U-Net's >= 32^2 layers, Winograd for the many-channel ones) vs with XLA's convs
  # everywhere. Winograd rounds differently (1e-6 to 1e-5 of a layer's scale), within the same bound.
  from jaxseg import losses, models
  from jaxseg.ops import conv_grad, winograd
  m = models.create(name)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 1))
  y = (jax.random.uniform(jax.random.key(1), (2, 64, 64)) > 0.7).astype(jnp.int32)
  params = m.init(jax.random.key(2), x)
  grad = lambda: jax.jit(jax.grad(lambda p: losses.softmax_cross_entropy(m.apply(p, x), y)))(params)
  text = jax.jit(lambda p: m.apply(p, x)).lower(params).as_text()
  assert "jaxseg_conv_forward" in text and "jaxseg_winograd_transform" in text
  with_kernels = grad()
  monkeypatch.setattr(cpu_conv, "applies", lambda *a, **k: False)
  monkeypatch.setattr(conv_grad, "KERNEL_DX", False)
  monkeypatch.setattr(winograd, "ENABLED", False)
  assert "jaxseg_" not in jax.jit(lambda p: m.apply(p, x)).lower(params).as_text()
  pure_xla = grad()
  for a, b in zip(jax.tree.leaves(with_kernels), jax.tree.leaves(pure_xla)):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-8, rtol=1e-4)


def test_switched_off_a_model_lowers_for_a_gpu_without_cpu_custom_calls(monkeypatch):
  # The kernels are chosen at trace time from the default backend; on a CPU host the way to
  # lower a conv_impl="lax" model for CUDA is JAXSEG_CPU_KERNELS=0 (README).
  from jaxseg import losses, models
  m = models.create("fcn")
  x = jnp.zeros((2, 64, 64, 1))
  y = jnp.zeros((2, 64, 64), jnp.int32)
  params = m.init(jax.random.key(0), x)
  def lowered_for_cuda():   # a new function each time: no cached trace
    g = lambda p: jax.grad(lambda p: losses.softmax_cross_entropy(m.apply(p, x), y))(p)
    return jax.jit(g).trace(params).lower(lowering_platforms=("cuda",)).as_text()
  assert "jaxseg_" in lowered_for_cuda()
  monkeypatch.setenv("JAXSEG_CPU_KERNELS", "0")
  monkeypatch.setattr(cpu_conv, "_state", {})
  assert "jaxseg_" not in lowered_for_cuda()
