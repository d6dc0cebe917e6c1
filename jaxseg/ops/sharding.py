"""Sharding helpers for the custom VJPs and FFI calls of `jaxseg.ops`.

Inside `jax.shard_map` every value carries the mesh axes it varies over. A
custom VJP must return cotangents of its inputs' exact type, and an FFI
call's result carries no axes although its values are per device. As JAX
does for its own primitives, a replicated kernel that meets a per-device
batch is first cast to varying (`lax.pcast`); the transpose of that cast
sums the weight gradient over the devices. Outside a shard_map these are
no-ops.

Under `jax.jit` with a mesh set (`jax.set_mesh`), XLA's partitioner splits
XLA's own ops, but it has no rule for a custom call: it gathers the whole
batch onto every device and runs the call there. `per_batch_shard` runs such
a function under `jax.shard_map` instead, each device on its share of the batch.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, PartitionSpec as P


def varying(a) -> frozenset:
  """The mesh axes `a` varies over inside `jax.shard_map` (empty outside)."""
  axis_type = getattr(jax.typeof(a), "manual_axis_type", None)
  return frozenset(getattr(axis_type, "varying", None) or ())


def match_varying(x, w):
  """x and w cast to vary over the same shard_map axes (call before a custom VJP of a conv)."""
  vx, vw = varying(x), varying(w)
  if vx - vw:
    w = jax.lax.pcast(w, tuple(sorted(vx - vw)), to="varying")
  if vw - vx:
    x = jax.lax.pcast(x, tuple(sorted(vw - vx)), to="varying")
  return x, w


def vary_like(a, ref):
  """`a` cast to vary over the shard_map axes `ref` varies over (for an FFI call's result)."""
  missing = varying(ref) - varying(a)
  return jax.lax.pcast(a, tuple(sorted(missing)), to="varying") if missing else a


def per_batch_shard(fn):
  """fn(x, w) -> y, run on each device's share of x's (and y's) leading batch axis, w replicated,
  when a mesh is set and the batch divides over all of its devices; fn itself otherwise (no mesh,
  inside shard_map or pmap, or an uneven batch). The weight gradient of the wrapped function is
  summed over the devices by `jax.shard_map`'s transpose."""
  def wrapped(x, w):
    mesh = jax.sharding.get_abstract_mesh()
    if (mesh.empty or any(t == AxisType.Manual for t in mesh.axis_types)
        or x.shape[0] % math.prod(mesh.axis_sizes)):
      return fn(x, w)
    batch = P(tuple(mesh.axis_names))
    return jax.shard_map(fn, mesh=mesh, in_specs=(batch, P()), out_specs=batch)(x, w)
  return wrapped
