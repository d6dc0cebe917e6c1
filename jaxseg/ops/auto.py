"""The `auto` route: per layer and per platform, the fastest tested implementation.

On the CPU a conv takes one of these routes (`conv_route`, rules in `ConvPolicy`):

- "winograd": Winograd F(4x4, 3x3) on the C++ kernels (`cpu.winograd`), for
  many-channel 3x3/1 (and 5x5/2, 6x6/2) layers on small images;
- "winograd3d": Winograd F(2x2, 3x3) over the in-plane taps of 3x3x3 convs,
  depth taps a conv on the direct kernels, fused band by band of tile rows
  (`cpu.winograd3d.conv3x3x3`), for the 3-D layers with 16 or more channels;
- "winograd3d_products": the same conv from separate transforms and per-position
  products over the whole batch (`cpu.winograd3d.conv3x3x3_composed`), for the
  deepest layers, where the kernel outweighs the data;
- "cpu_direct": the C++ direct kernels (`cpu.direct`), for few channels on
  large images, first layers, and 3-D convs;
- "gemm_grad": XLA's forward with GEMM gradients (`conv_grad`), for strided
  and few-row layers;
- "xla": plain `lax.conv_general_dilated` and XLA's autodiff.

A strided transposed conv whose kernel equals its stride (the U-Net's
up-convs) takes "cpu_direct" (`cpu.direct.conv_transpose_geo`: each stride
phase's GEMM rows written in place); other strided ones the stride-phase form
(`phase`: "phase_rows" when the kernel is no larger than the stride, else
"phase", whose stride-1 conv follows the rules above); others take "xla". On
every other platform (CUDA, ROCm, TPU) `auto` is XLA's convolution.

The choice between platforms is made when lowering, not when tracing: each
non-XLA route is a custom VJP whose forward and backward rules are each a
`lax.platform_dependent` of the CPU form and XLA's form. Lowering for one
platform keeps only that platform's branch, so one traced function compiles
with the C++ kernels on a CPU and holds no CPU custom call when lowered for a
GPU. (Differentiating *through* a `platform_dependent` would not do: JAX's
transpose of a `cond` takes the branch index as a residual and lowers every
branch of the backward.) The backward recomputes the CPU form's residuals
from (x, w); inside one jitted step XLA shares them with the forward (CSE).

Unlike `impl="lax"`, an `auto` conv has a custom VJP, so `jax.linear_transpose`
and higher-order derivatives do not pass through it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxseg.ops import conv_grad, phase
from jaxseg.ops._common import ConvGeometry, conv_geometry, prod
from jaxseg.ops.cpu import build, direct, winograd, winograd3d
from jaxseg.ops.policy import ConvPolicy, resolve
from jaxseg.ops.sharding import match_varying, per_batch_shard
from jaxseg.ops.xla import conv_lax, conv_transpose_lax

CONV_ROUTES = ("winograd", "winograd3d", "winograd3d_products", "cpu_direct", "gemm_grad", "xla")
TRANSPOSE_ROUTES = ("cpu_direct", "phase_rows", "phase", "xla")
ROUTE_NOTES = {
    "winograd": "Winograd F(4x4,3x3) on the C++ kernels",
    "winograd3d": "Winograd F(2x2,3x3) in-plane, depth direct, fused by tile rows, on the C++ kernels",
    "winograd3d_products": "Winograd F(2x2,3x3) in-plane, depth direct, products per position, on the C++ kernels",
    "cpu_direct": "C++ direct conv kernels",
    "gemm_grad": "XLA forward, GEMM backward",
    "xla": "XLA",
    "phase_rows": "stride phases as GEMM rows",
    "phase": "stride phases: one stride-1 conv + depth-to-space",
}
# Platforms with rules of their own; every other platform gets XLA.
CPU = "cpu"


def _strided(geo: ConvGeometry) -> bool:
  return any(s > 1 for s in geo.stride)


def conv_route(geo: ConvGeometry, *, dtype=jnp.float32, batch: int, platform: str = CPU,
               policy: ConvPolicy | None = None, kernels: bool | None = None) -> str:
  """The route (one of CONV_ROUTES) a conv of geometry `geo` takes under `auto` on `platform`.

  `kernels` says whether the C++ kernels can run (default: whether they are
  available on this host, compiling them on first use).
  """
  if platform != CPU:
    return "xla"
  policy = resolve(policy)
  if kernels is None:
    kernels = policy.cpu_kernels and build.available()
  if kernels and policy.cpu_kernels:
    if (policy.winograd and winograd.supports(geo, dtype) and geo.cin >= policy.winograd_min_channels
        and geo.cout >= policy.winograd_min_channels and prod(geo.out_shape) <= policy.winograd_max_pixels):
      return "winograd"
    if (policy.winograd_3d and winograd3d.supports(geo, dtype) and geo.cin >= policy.winograd_3d_min_channels
        and geo.cout >= policy.winograd_3d_min_channels):
      if batch * prod(geo.out_shape) <= policy.winograd_3d_products_max_voxels:
        return "winograd3d_products"
      return "winograd3d"
    if direct.supports(geo, dtype):
      if geo.nd == 3:
        if policy.direct_3d:
          return "cpu_direct"
      else:
        few_channels = (not _strided(geo) and geo.cin * geo.cout <= policy.direct_max_channel_product
                        and prod(geo.out_shape) >= policy.direct_min_pixels)
        if few_channels or len(geo.taps) * geo.cin <= policy.direct_max_patch:
          return "cpu_direct"
  if policy.gemm_grad and geo.groups == 1:
    small = len(geo.taps) * geo.cin <= policy.gemm_small_patch
    few_rows = batch * prod(geo.out_shape) <= policy.gemm_max_rows_stride1
    if _strided(geo) or (few_rows and (small or not policy.gemm_stride1_small_only)):
      return "gemm_grad"
  return "xla"


def strided_dx_form(geo: ConvGeometry, dtype, policy: ConvPolicy, kernels: bool) -> str:
  """The input-gradient form of a "gemm_grad" conv (see `conv_grad.conv`)."""
  if policy.strided_dx == "kernel":
    if (kernels and policy.cpu_kernels and direct.supports(geo, dtype)
        and geo.cin >= policy.direct_min_dx_channels):
      return "kernel"
    return "col2im"
  return policy.strided_dx


def conv_transpose_route(geo: ConvGeometry, *, dtype=jnp.float32, platform: str = CPU,
                         policy: ConvPolicy | None = None, kernels: bool | None = None) -> str:
  """The route (one of TRANSPOSE_ROUTES) of a transposed conv whose forward geometry is `geo`.

  `kernels` says whether the C++ kernels can run (default: whether they are available here)."""
  policy = resolve(policy)
  if platform != CPU or not policy.transpose_phase or not _strided(geo) or any(d != 1 for d in geo.dilation):
    return "xla"
  if kernels is None:
    kernels = policy.cpu_kernels and build.available()
  if kernels and policy.cpu_kernels and policy.transpose_direct and direct.transpose_supports(geo, dtype):
    return "cpu_direct"
  if policy.transpose_rows and all(q == 1 for q in phase.taps_per_phase(geo)):
    return "phase_rows"
  return "phase"


def _vjp_of(fn):
  return lambda x, w, g: jax.vjp(fn, x, w)[1](g)


def per_platform(cpu_fn, default_fn):
  """f(x, w) = cpu_fn(x, w) when lowered for the CPU, default_fn(x, w) for any other platform.

  Both must compute the same function (up to rounding) with the same output
  type. The forward and the backward are each chosen when lowering (see the
  module doc for why the VJP is written by hand). Under `jax.jit` with a mesh
  set, the CPU form runs per shard of the batch (`sharding.per_batch_shard`).
  """
  cpu_fn = per_batch_shard(cpu_fn)   # C++ custom calls have no partitioning rule of their own

  @jax.custom_vjp
  def f(x, w):
    return lax.platform_dependent(x, w, cpu=cpu_fn, default=default_fn)

  def fwd(x, w):
    return f(x, w), (x, w)

  def bwd(res, g):
    x, w = res
    return lax.platform_dependent(x, w, g, cpu=_vjp_of(cpu_fn), default=_vjp_of(default_fn))

  f.defvjp(fwd, bwd)
  return f


def cpu_conv_fn(geo: ConvGeometry, route: str, dtype, policy: ConvPolicy, kernels: bool):
  """(x, w) -> y on the CPU for `route`."""
  if route == "winograd":
    return lambda x, w: winograd.conv_geo(x, w, geo)
  if route == "winograd3d":
    return lambda x, w: winograd3d.conv_geo(x, w, geo)
  if route == "winograd3d_products":
    return lambda x, w: winograd3d.conv_geo(x, w, geo, fused=False)
  if route == "cpu_direct":
    return lambda x, w: direct.conv_geo(x, w, geo, min_dx_channels=policy.direct_min_dx_channels)
  if route == "gemm_grad":
    dx = strided_dx_form(geo, dtype, policy, kernels)
    return lambda x, w: conv_grad.conv(x, w, geo, dx=dx, small_patch=policy.gemm_small_patch)
  return lambda x, w: conv_lax(x, w, geo)


def conv_auto(x, w, geo: ConvGeometry, policy: ConvPolicy | None = None):
  """`conv` with impl="auto": the CPU route of `conv_route` on a CPU, XLA's conv elsewhere."""
  policy = resolve(policy)
  kernels = policy.cpu_kernels and build.available()
  route = conv_route(geo, dtype=x.dtype, batch=x.shape[0], policy=policy, kernels=kernels)
  if route == "xla":
    return conv_lax(x, w, geo)
  xla_fn = lambda x, w: conv_lax(x, w, geo)
  return per_platform(cpu_conv_fn(geo, route, x.dtype, policy, kernels), xla_fn)(*match_varying(x, w))


def conv_transpose_auto(y, w, geo: ConvGeometry, policy: ConvPolicy | None = None):
  """`conv_transpose` with impl="auto": on a CPU the route of `conv_transpose_route` (the C++
  kernel for kernel == stride, else the stride-phase form with its stride-1 conv on `conv_auto`),
  XLA's transposed conv elsewhere."""
  policy = resolve(policy)
  route = conv_transpose_route(geo, dtype=y.dtype, policy=policy)
  if route == "xla":
    return conv_transpose_lax(y, w, geo)
  if route == "cpu_direct":
    cpu_fn = lambda y, w: direct.conv_transpose_geo(y, w, geo)
    return per_platform(cpu_fn, lambda y, w: conv_transpose_lax(y, w, geo))(*match_varying(y, w))
  inner = functools.partial(conv_auto, policy=policy)
  cpu_fn = lambda y, w: phase.conv_transpose_phase(y, w, geo, conv_fn=inner, rows=policy.transpose_rows)
  return per_platform(cpu_fn, lambda y, w: conv_transpose_lax(y, w, geo))(*match_varying(y, w))


def describe(kind: str, geo: ConvGeometry, *, dtype=jnp.float32, batch: int, platform: str = CPU,
             policy: ConvPolicy | None = None) -> str:
  """The route of a conv ("conv") or transposed conv ("conv_transpose") and, for the phase
  form, the route of its stride-1 conv: e.g. "phase + gemm_grad"."""
  if kind == "conv":
    return conv_route(geo, dtype=dtype, batch=batch, platform=platform, policy=policy)
  route = conv_transpose_route(geo, dtype=dtype, platform=platform, policy=policy)
  if route != "phase":
    return route
  q = phase.taps_per_phase(geo)
  kshape = tuple(q) + (geo.cout, prod(geo.stride) * geo.cin)
  inner = conv_geometry((batch, *geo.out_shape, geo.cout), kshape, stride=1,
                        padding=[(qq - 1, qq - 1) for qq in q], dilation=1, groups=1)
  return f"phase + {conv_route(inner, dtype=dtype, batch=batch, platform=platform, policy=policy)}"
