"""`jax.shard_map` varying-axis helpers for the custom VJPs and FFI calls of `jaxseg.ops`.

Inside `jax.shard_map` every value carries the mesh axes it varies over. A
custom VJP must return cotangents of its inputs' exact type, and an FFI
call's result carries no axes although its values are per device. As JAX
does for its own primitives, a replicated kernel that meets a per-device
batch is first cast to varying (`lax.pcast`); the transpose of that cast
sums the weight gradient over the devices. Outside a shard_map these are
no-ops.
"""

from __future__ import annotations

import jax


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
