"""`impl="auto"`: every route against the NumPy reference, the route rules, and the choice per platform.

Forward, dx and dW of `ops.conv(impl="auto")` on shapes that take each route
(Winograd, the C++ direct kernels, XLA with GEMM gradients -- kernel and
col2im input gradients --, plain XLA), and `conv_transpose(impl="auto")` in
both phase forms; `conv_route` names the route first, so a shape that stops
reaching its route fails here. Bounds: Winograd 2e-5 of the result's scale
(its transforms scale by up to 8 and 1/24, see `cpu.winograd`); the others
2e-4 absolute and relative (float32 sums in another order). Then: what a
model lowered for each platform holds.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses, models, ops, reference
from jaxseg.errors import ConfigError
from jaxseg.ops import DEFAULT_POLICY, auto
from jaxseg.ops._common import conv_geometry, conv_transpose_geometry
from jaxseg.ops.cpu import build

from test_fast_paths import numpy_input_grad, numpy_weight_grad

KERNELS = build.available()
needs_kernels = pytest.mark.skipif(not KERNELS, reason="the C++ kernels do not run on this machine")
WINOGRAD_REL = 2e-5
TOL = dict(atol=2e-4, rtol=2e-4)

# route, x shape, w shape, stride, padding
CASES = [
    ("winograd", (2, 12, 11, 32), (3, 3, 32, 40), 1, "SAME"),        # tile remainders, 40 = 32 + tail
    ("winograd", (2, 16, 15, 32), (5, 5, 32, 33), 2, "SAME"),        # 5x5/2 by space-to-depth
    ("cpu_direct", (1, 32, 33, 8), (3, 3, 8, 20), 1, "SAME"),        # few channels, >= 32^2 pixels
    ("cpu_direct", (2, 20, 21, 1), (5, 5, 1, 20), 2, "SAME"),        # a first layer (taps * C_in <= 64)
    ("gemm_grad", (2, 12, 13, 16), (3, 3, 16, 24), 2, "SAME"),       # strided: dx on the kernel by phases
    ("gemm_grad", (2, 12, 13, 8), (3, 3, 8, 24), 2, [(0, 1), (2, 0)]),  # C_in < 16: col2im dx
    ("cpu_direct", (1, 6, 7, 8, 4), (3, 3, 3, 4, 8), 2, "SAME"),     # 3-D, strided, C_in < 16: col2im dx
    ("cpu_direct", (2, 4, 6, 5, 16), (3, 3, 3, 16, 8), 1, "SAME"),   # 3-D, stride 1, C_out < 16: dx by the kernel
    ("winograd3d", (2, 5, 11, 10, 16), (3, 3, 3, 16, 20), 1, "SAME"),            # 3-D, 1100 voxels: fused
    ("winograd3d_products", (2, 3, 4, 5, 16), (3, 3, 3, 16, 24), 1, "SAME"),     # 3-D, 120 voxels
    ("gemm_grad", (2, 10, 3), (3, 3, 5), 1, "VALID"),                # 1-D, few rows, small patch
    ("xla", (2, 8, 8, 20), (3, 3, 20, 8), 1, "SAME"),                # few rows, large patch
]
IDS = [f"{r}-{'x'.join(map(str, x[1:]))}-{'x'.join(map(str, w[:-2]))}/{s}" for r, x, w, s, _ in CASES]


def _data(x_shape, w_shape, seed=0):
  r = np.random.default_rng(seed)
  x = r.standard_normal(x_shape).astype(np.float32)
  w = (r.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:-1]))).astype(np.float32)
  return x, w


def _close(got, want, route):
  want = np.asarray(want, np.float64)
  if route == "winograd":
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=WINOGRAD_REL * np.max(np.abs(want)))
  else:
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL)


@pytest.mark.parametrize("route,x_shape,w_shape,stride,padding", CASES, ids=IDS)
def test_auto_conv_matches_numpy(route, x_shape, w_shape, stride, padding):
  if route in ("winograd", "winograd3d", "winograd3d_products", "cpu_direct") and not KERNELS:
    pytest.skip("the C++ kernels do not run on this machine")
  assert ops.conv_route(x_shape, w_shape, stride=stride, padding=padding, platform="cpu") == route
  x, w = _data(x_shape, w_shape)
  f = lambda x, w: ops.conv(x, w, stride=stride, padding=padding, impl="auto")
  y, vjp = jax.vjp(f, x, w)
  want = reference.conv(x.astype(np.float64), w.astype(np.float64), stride=stride, padding=padding)
  _close(y, want, route)
  g = np.random.default_rng(1).standard_normal(np.shape(y)).astype(np.float32)
  dx, dw = jax.jit(vjp)(g)
  kw = dict(stride=stride, padding=padding, dilation=1)
  _close(dx, numpy_input_grad(g, w, x_shape, **kw), route)
  _close(dw, numpy_weight_grad(x, g, w_shape, **kw), route)
  # the same route, jitted as a whole
  np.testing.assert_allclose(jax.jit(f)(x, w), y, rtol=1e-6, atol=1e-6)


# route, y shape, w shape (*k, C_out, C_in), stride
TRANSPOSE_CASES = [
    # kernel = stride (U-Net up-convs): the C++ kernel writes the phases in place
    pytest.param("cpu_direct", (2, 5, 6, 8), (2, 2, 4, 8), 2, marks=needs_kernels),
    pytest.param("cpu_direct", (1, 3, 4, 5, 32), (2, 2, 2, 13, 32), 2, marks=needs_kernels),  # 26 columns
    pytest.param("cpu_direct", (2, 2, 3, 4, 16), (2, 2, 2, 40, 16), 2, marks=needs_kernels),  # 64 + 16
    pytest.param("cpu_direct", (1, 3, 2, 20), (3, 3, 16, 20), 3, marks=needs_kernels),        # 3x3/3: 48
    ("phase_rows", (2, 5, 6, 8), (2, 2, 4, 8), 3),       # kernel < stride: GEMM rows
    ("phase", (2, 4, 4, 2), (31, 31, 2, 2), 16),         # the lab FCN's upscore
    ("phase", (1, 4, 5, 3, 4), (3, 3, 3, 2, 4), 2),      # 3-D
    ("xla", (2, 6, 5, 3), (3, 3, 4, 3), 1),              # stride 1
]


@pytest.mark.parametrize("route,y_shape,w_shape,stride", TRANSPOSE_CASES,
                         ids=[f"{c.values[0] if hasattr(c, 'values') else c[0]}-{i}"
                              for i, c in enumerate(TRANSPOSE_CASES)])
def test_auto_conv_transpose_matches_numpy(route, y_shape, w_shape, stride):
  assert ops.conv_transpose_route(y_shape, w_shape, stride=stride, platform="cpu").split(" + ")[0] == route
  y, w = _data(y_shape, w_shape, seed=3)
  f = lambda y, w: ops.conv_transpose(y, w, stride=stride, impl="auto")
  x, vjp = jax.vjp(f, y, w)
  want = reference.conv_transpose(y.astype(np.float64), w.astype(np.float64), stride=stride)
  np.testing.assert_allclose(x, want, **TOL)
  g = np.random.default_rng(4).standard_normal(np.shape(x)).astype(np.float32)
  dy, dw = jax.jit(vjp)(g)
  # conv_transpose(., w) is the adjoint of conv(., w): dy = conv(g, w), dW by the same loops
  # (the forward conv maps g's shape to y's with kernel w).
  geo_pads = [tuple(p) for p in conv_geometry(g.shape, w.shape, stride=stride, padding="SAME", dilation=1,
                                              groups=1).pads]
  np.testing.assert_allclose(dy, reference.conv(g.astype(np.float64), w.astype(np.float64), stride=stride,
                                                padding=geo_pads), **TOL)
  np.testing.assert_allclose(dw, numpy_weight_grad(g, y, w.shape, stride=stride, padding=geo_pads,
                                                   dilation=1), **TOL)


def test_routes_per_platform_and_policy():
  fcn3 = ((8, 16, 16, 200), (3, 3, 200, 300))
  for platform in ("cuda", "rocm", "tpu"):
    assert ops.conv_route(*fcn3, platform=platform) == "xla"
    assert ops.conv_transpose_route((8, 16, 16, 2), (31, 31, 2, 2), stride=16, platform=platform) == "xla"
  geo = conv_geometry(*fcn3, stride=1, padding="SAME", dilation=1, groups=1)
  assert auto.conv_route(geo, batch=8, kernels=True) == "winograd"
  # Without the kernels this few-row, large-patch layer stays XLA's; a strided one takes GEMM dW.
  assert auto.conv_route(geo, batch=8, kernels=False) == "xla"
  no_kernels = dataclasses.replace(DEFAULT_POLICY, cpu_kernels=False)
  assert auto.conv_route(geo, batch=8, policy=no_kernels) == "xla"
  strided = conv_geometry((8, 64, 64, 100), (5, 5, 100, 200), stride=2, padding="SAME", dilation=1, groups=1)
  assert auto.conv_route(strided, batch=8, policy=no_kernels) == "gemm_grad"
  assert auto.conv_route(strided, batch=8, policy=dataclasses.replace(no_kernels, gemm_grad=False)) == "xla"
  assert ops.conv_transpose_route((8, 16, 16, 2), (31, 31, 2, 2), stride=16, platform="cpu",
                                  policy=dataclasses.replace(DEFAULT_POLICY, transpose_phase=False)) == "xla"
  assert ops.conv_transpose_route((8, 16, 16, 32), (2, 2, 16, 32), stride=2, platform="cpu",
                                  policy=dataclasses.replace(DEFAULT_POLICY, transpose_direct=False,
                                                             transpose_rows=False)
                                  ).startswith("phase + ")
  up = conv_transpose_geometry((8, 16, 16, 32), (2, 2, 16, 32), stride=2, padding="SAME", output_padding=None,
                               dilation=1)
  assert auto.conv_transpose_route(up, kernels=True) == "cpu_direct"
  assert auto.conv_transpose_route(up, kernels=False) == "phase_rows"
  assert auto.conv_transpose_route(up, kernels=True, policy=dataclasses.replace(
      DEFAULT_POLICY, transpose_direct=False)) == "phase_rows"
  # a kernel larger than the stride overlaps phases: not this kernel's case
  big = conv_transpose_geometry((8, 16, 16, 32), (3, 3, 16, 32), stride=2, padding="SAME", output_padding=None,
                                dilation=1)
  assert auto.conv_transpose_route(big, kernels=True).startswith("phase")
  with pytest.raises(ConfigError):
    dataclasses.replace(DEFAULT_POLICY, strided_dx="fft")


@needs_kernels
def test_policy_variants_agree_with_each_other():
  # Different rules, same function: each variant of the FCN's layers gives XLA's values within
  # the Winograd bound, forward and gradients.
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 1))
  y = (jax.random.uniform(jax.random.key(1), (2, 64, 64)) > 0.8).astype(jnp.int32)
  base = models.create("fcn", conv_impl="lax")
  params = base.init(jax.random.key(2), x)
  loss = lambda m: jax.jit(jax.value_and_grad(lambda p: losses.dice_ce_loss(m.apply(p, x), y)))
  want_v, want_g = loss(base)(params)
  for kw in ({}, {"winograd": False}, {"strided_dx": "col2im"}, {"strided_dx": "xla"},
             {"transpose_rows": False, "transpose_phase": False}, {"cpu_kernels": False}):
    m = models.create("fcn", conv_policy=dataclasses.replace(DEFAULT_POLICY, **kw))
    v, g = loss(m)(params)
    np.testing.assert_allclose(v, want_v, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want_g)):
      np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-8, rtol=1e-4)


def _grad_fn(m, x, y):
  return lambda p: jax.grad(lambda p: losses.dice_ce_loss(m.apply(p, x, train=True,
                                                                  rngs={"dropout": jax.random.key(0)}), y))(p)


@pytest.mark.parametrize("name", ["fcn", "unet_small"])
def test_one_traced_model_lowers_per_platform(name):
  # The default (auto) model, traced once on this CPU host: lowered for the CPU it holds the C++
  # kernels' custom calls; lowered for CUDA it holds none of them, in no branch: each choice is a
  # platform_dependent whose other branch is dropped when lowering. What remains of the choice in
  # the CUDA module are `case` ops with constant indices (one kept branch each), which every
  # compiler folds; and the convolutions are XLA's.
  m = models.create(name)
  x = jnp.zeros((2, 64, 64, 1))
  y = jnp.zeros((2, 64, 64), jnp.int32)
  params = m.init(jax.random.key(0), x)
  traced = jax.jit(_grad_fn(m, x, y)).trace(params)
  cuda = traced.lower(lowering_platforms=("cuda",)).as_text()
  assert "jaxseg_" not in cuda and "custom_call" not in cuda
  assert "stablehlo.convolution" in cuda
  cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
  assert ("jaxseg_conv_forward" in cpu) == KERNELS
  if KERNELS:
    compiled = jax.jit(_grad_fn(m, x, y)).lower(params).compile().as_text()
    assert "conditional" not in compiled          # the CPU compiler folded every choice


def test_traced_3d_model_lowers_per_platform():
  # The same for unet3d_small on an 8x16x16 patch: on the CPU its first level's 16-channel convs
  # (2048 voxels) take the fused 3-D Winograd and the deeper ones (<= 256 voxels) its products form;
  # lowered for CUDA, none of the kernels' custom calls remain.
  m = models.create("unet3d_small")
  x = jnp.zeros((1, 8, 16, 16, 1))
  y = jnp.zeros((1, 8, 16, 16), jnp.int32)
  params = m.init(jax.random.key(0), x)
  traced = jax.jit(_grad_fn(m, x, y)).trace(params)
  cuda = traced.lower(lowering_platforms=("cuda",)).as_text()
  assert "jaxseg_" not in cuda and "custom_call" not in cuda
  cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
  for target in ("jaxseg_winograd3d_conv_forward", "jaxseg_winograd3d_conv_backward", "jaxseg_winograd3d_product"):
    assert (target in cpu) == KERNELS, target


@pytest.mark.parametrize("name", ["fcn", "unet_small"])
def test_lax_model_is_plain_xla(name):
  # conv_impl="lax": XLA's convs and XLA's autodiff only, no custom call anywhere, on any platform.
  m = models.create(name, conv_impl="lax")
  x = jnp.zeros((2, 32, 32, 1))
  y = jnp.zeros((2, 32, 32), jnp.int32)
  params = m.init(jax.random.key(0), x)
  traced = jax.jit(_grad_fn(m, x, y)).trace(params)
  for platform in ("cpu", "cuda"):
    text = traced.lower(lowering_platforms=(platform,)).as_text()
    assert "custom_call" not in text and "stablehlo.case" not in text


def test_shard_map_of_auto_model_matches_one_device():
  # Under shard_map the auto route's custom VJPs and FFI calls keep the varying-axis types
  # right: the gradient of the batch split over 2 devices (taken inside the shard_map, where
  # the replicated parameters' gradient is summed over the devices by the transpose of their
  # cast to varying) equals the unsplit one. All of the FCN's routes are in it, among them the
  # upscore's phase conv on 2 channels, whose input gradient is XLA's.
  from jax.sharding import Mesh, PartitionSpec as P
  if len(jax.devices()) < 2:
    pytest.skip("needs 2 devices")
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  m = models.create("fcn")
  x = jax.random.normal(jax.random.key(0), (4, 64, 64, 1))
  y = (jax.random.uniform(jax.random.key(1), (4, 64, 64)) > 0.8).astype(jnp.int32)
  params = m.init(jax.random.key(2), x)
  ce_sum = lambda p, x, y: losses.softmax_cross_entropy(m.apply(p, x), y) * x.shape[0]
  split = jax.shard_map(jax.grad(ce_sum), mesh=mesh,
                        in_specs=(P(), P("data"), P("data")), out_specs=P())
  got = jax.jit(split)(params, x, y)
  want = jax.jit(jax.grad(lambda p: ce_sum(p, x, y)))(params)
  chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-4)


def test_jit_over_a_mesh_runs_the_kernels_per_batch_shard():
  # jax.jit over a mesh (jax.set_mesh) with the batch sharded: XLA's partitioner has no rule for
  # the C++ custom calls and would gather the whole batch onto every device; the auto route runs
  # them under shard_map on each device's share instead. Same values as one device, and no
  # all-gather in the compiled step.
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices")
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
  x = jax.random.normal(jax.random.key(0), (8, 64, 64, 1))
  y = (jax.random.uniform(jax.random.key(1), (8, 64, 64)) > 0.8).astype(jnp.int32)
  m = models.create("fcn")
  params = m.init(jax.random.key(2), x[:1])
  step = lambda p, x, y: jax.value_and_grad(lambda p: losses.dice_ce_loss(m.apply(p, x), y))(p)
  want = jax.jit(step)(params, x, y)
  shard = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    f = jax.jit(step)
    compiled = f.lower(params, jax.device_put(x, shard), jax.device_put(y, shard)).compile().as_text()
    got = f(params, jax.device_put(x, shard), jax.device_put(y, shard))
  assert ("jaxseg_conv_forward" in compiled) == KERNELS and "all-gather" not in compiled
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-8, rtol=1e-4)
