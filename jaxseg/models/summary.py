"""A Keras-style model summary: one row per layer with its output shape and parameter count.

Nothing is computed: the model is traced with `jax.eval_shape`, so even the
12.7M-parameter dense model is summarised without allocating its weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers


@dataclasses.dataclass(frozen=True)
class LayerRow:
  name: str  # the module path, "/"-joined (the key in the params tree)
  type: str
  output_shape: tuple  # with None for the batch axis, as Keras prints it
  params: int
  route: str | None = None  # conv layers: the impl, and for "auto" the route it takes


def conv_route(module, x_shape, platform: str | None = None) -> str | None:
  """The implementation a `Conv` / `ConvTranspose` layer runs for an input of `x_shape`:
  its `conv_impl`, and under "auto" the route (`jaxseg.ops.conv_route`) on `platform`."""
  from jaxseg import ops
  if not isinstance(module, (layers.Conv, layers.ConvTranspose)):
    return None
  k = tuple(module.kernel_size)
  strides = layers.per_dim(module.strides, len(k))
  if isinstance(module, layers.Conv):
    if module.conv_impl != "auto":
      return module.conv_impl
    return "auto: " + ops.conv_route(x_shape, k + (x_shape[-1], module.features), stride=strides,
                                     padding=module.padding, platform=platform, policy=module.conv_policy)
  impl = layers.transpose_impl(module.conv_impl)
  if impl != "auto":
    return impl
  return "auto: " + ops.conv_transpose_route(x_shape, k + (module.features, x_shape[-1]), stride=strides,
                                             padding=module.padding, platform=platform,
                                             policy=module.conv_policy)


def layer_rows(model: nn.Module, input_shape: Sequence[int], *, platform: str | None = None) -> list[LayerRow]:
  """The layers of ``model`` in call order for an input of ``input_shape`` (batch axis included);
  conv layers name the route they take when lowered for `platform` (default: this host's)."""
  calls = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__" and isinstance(module, layers.SUMMARY_LAYERS):
      calls.append((tuple(module.scope.path), type(module).__name__, tuple(out.shape),
                    conv_route(module, tuple(args[0].shape), platform)))
    return out

  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)

  def apply(variables, x):
    with nn.intercept_methods(interceptor):
      return model.apply(variables, x)

  jax.eval_shape(apply, variables, x)
  params = variables.get("params", {})
  rows = []
  for path, kind, shape, route in calls:
    sub = params
    for key in path:
      sub = sub.get(key, {}) if hasattr(sub, "get") else {}
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(sub))
    rows.append(LayerRow("/".join(path), kind, (None,) + shape[1:], count, route))
  return rows


def count_params(model: nn.Module, input_shape: Sequence[int]) -> int:
  """Number of parameters of ``model`` built for ``input_shape`` (via eval_shape, no allocation)."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables))


def summarize(model: nn.Module, input_shape: Sequence[int], *, title: str | None = None,
              platform: str | None = None) -> str:
  """The summary table as text, ending with ``Total params: N`` (N with thousands commas); a
  last column names each conv layer's implementation (and route, under "auto") on `platform`."""
  rows = layer_rows(model, input_shape, platform=platform)
  total = count_params(model, input_shape)
  name_w = max([len(f"{r.name} ({r.type})") for r in rows] + [24]) + 2
  shape_w = max([len(str(r.output_shape)) for r in rows] + [20]) + 2
  route_w = max([len(r.route or "") for r in rows] + [0])
  width = name_w + shape_w + 14 + (route_w + 2 if route_w else 0)
  title = title or type(model).__name__
  route_head = "  Conv route" if route_w else ""
  lines = [f'Model: "{title}"  input {(None,) + tuple(input_shape)[1:]}', "_" * width,
           f"{'Layer (type)':<{name_w}}{'Output Shape':<{shape_w}}{'Param #':>12}{route_head}", "=" * width]
  for i, r in enumerate(rows):
    if i:
      lines.append("_" * width)
    route = f"  {r.route or '':<{route_w}}" if route_w else ""
    lines.append(f"{r.name + ' (' + r.type + ')':<{name_w}}{str(r.output_shape):<{shape_w}}{r.params:>12,}"
                 f"{route}".rstrip())
  lines += ["=" * width, f"Total params: {total:,}", "_" * width]
  return "\n".join(lines)
