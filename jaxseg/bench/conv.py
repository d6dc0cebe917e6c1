"""Benchmark every conv implementation on every conv layer of a model.

For each layer and impl: the output and both gradients are first checked
against ``impl="lax"`` (a wrong impl is reported and never timed), then the
forward and the forward+backward are timed. The backward uses ``jax.vjp``
with a random cotangent: with ``grad(sum(conv))`` the cotangent is all ones
and XLA folds much of the backward away.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.bench.layers import ConvLayer, matrix_nnz
from jaxseg.bench.timing import compiled_memory_mb, time_fn

# A wrong impl is off by O(1) of the output's scale; float32 sums of a few
# thousand terms in another order differ by ~1e-6, TF32 on GPUs by ~1e-3.
REL_TOL = 5e-3
# conv_matrix stores 3 numbers per entry (value + 2 int32 indices): 12 bytes.
BCOO_BYTES_PER_NNZ = 12
MATRIX_MAX_NNZ = 20_000_000  # 240 MB per image: beyond, the matrix impl is skipped
# direct and matrix build one op per kernel tap: a 31x31 kernel is 961 unrolled
# ops (x2 for the VJP), which takes XLA minutes to compile; beyond this, skip.
MAX_UNROLLED_TAPS = 64


class WrongResult(AssertionError):
  """An impl disagrees with lax beyond the tolerance."""


def auto_route(layer: ConvLayer, platform: str | None = None) -> str:
  """The route `impl="auto"` takes for this layer (`jaxseg.ops.conv_route` / `conv_transpose_route`),
  with its description: e.g. "winograd: Winograd F(4x4,3x3) on the C++ kernels"."""
  from jaxseg import ops
  kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, platform=platform)
  if layer.kind == "conv":
    route = ops.conv_route(layer.x_shape, layer.w_shape, groups=layer.groups, **kw)
  else:
    route = ops.conv_transpose_route(layer.x_shape, layer.w_shape, **kw)
  return f"{route}: {ops.ROUTE_NOTES[route.split(' + ')[0]]}"


def impls_available(kind: str) -> tuple[str, ...]:
  from jaxseg import ops
  return ops.CONV_IMPLS if kind == "conv" else ops.CONV_TRANSPOSE_IMPLS


def layer_fn(layer: ConvLayer, impl: str) -> Callable:
  """``f(x, w)`` running this layer with this impl through ``jaxseg.ops``."""
  from jaxseg import ops
  kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, impl=impl)
  if layer.kind == "conv":
    return functools.partial(ops.conv, groups=layer.groups, **kw)
  return functools.partial(ops.conv_transpose, **kw)


def fwd_bwd(f: Callable) -> Callable:
  """(x, w, ct) -> (y, dx, dw): the forward and the VJP with cotangent ``ct``.

  y is returned so the forward is not dead code (the VJP of a linear op does
  not need it).
  """
  def g(x, w, ct):
    y, vjp = jax.vjp(f, x, w)
    dx, dw = vjp(ct)
    return y, dx, dw
  return g


def torch_layer_step(layer: ConvLayer, x, w, ct) -> tuple[Callable, Callable] | None:
  """PyTorch's forward + backward of this layer on the same x, w and cotangent (channels-first
  copies), as (step, results): step() runs `F.conv{n}d` / `F.conv_transpose{n}d` and its backward;
  results() gives (y, dx, dw) in jaxseg's layouts, for the check against lax. None when PyTorch
  is not installed."""
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    return None
  from jaxseg.ops._common import conv_geometry, conv_transpose_geometry
  nd = len(layer.x_shape) - 2
  first = lambda a: torch.from_numpy(np.array(np.moveaxis(np.asarray(a), -1, 1)))   # a writable copy
  last = lambda t: np.moveaxis(t.detach().numpy(), 1, -1)
  perm = (nd + 1, nd) + tuple(range(nd))          # (*k, a, b) -> (b, a, *k): PyTorch's weight layout
  xt = first(x).requires_grad_(True)
  wt = torch.from_numpy(np.array(np.transpose(np.asarray(w), perm))).requires_grad_(True)
  ct_t = first(ct)
  if layer.kind == "conv":
    geo = conv_geometry(layer.x_shape, layer.w_shape, stride=layer.stride, padding=layer.padding,
                        dilation=layer.dilation, groups=layer.groups)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    symmetric = all(lo == hi for lo, hi in geo.pads)
    flat = [p for lo_hi in reversed(geo.pads) for p in lo_hi]     # F.pad: last dim first

    def forward():
      inp = xt if symmetric else F.pad(xt, flat)
      return conv(inp, wt, stride=geo.stride, padding=[lo for lo, _ in geo.pads] if symmetric else 0,
                  dilation=geo.dilation, groups=geo.groups)
  else:
    geo = conv_transpose_geometry(layer.x_shape, layer.w_shape, stride=layer.stride, padding=layer.padding,
                                  output_padding=None, dilation=layer.dilation)
    # PyTorch crops `padding` from both ends and adds `output_padding` at the end; a crop it
    # cannot express (the FCN's upscore: 7 before, 8 after) is a slice of the uncropped output.
    pads, out_pads, crops = [], [], []
    for n, i, k, s, d, (lo, _) in zip(geo.out_shape, geo.in_shape, geo.kernel, geo.stride, geo.dilation,
                                      geo.pads):
      crop_end = (n - 1) * s + (k - 1) * d + 1 - lo - i
      fits = 0 <= lo - crop_end < max(s, d)
      pads.append(lo if fits else 0)
      out_pads.append(lo - crop_end if fits else 0)
      crops.append(slice(None) if fits else slice(lo, lo + i))
    conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]

    def forward():
      y = conv_t(xt, wt, stride=geo.stride, padding=pads, output_padding=out_pads, dilation=geo.dilation)
      return y[(slice(None), slice(None)) + tuple(crops)]
  state = {}

  def step():
    xt.grad = wt.grad = None
    y = forward()
    y.backward(ct_t)
    state["y"] = y
    return y

  def results():
    return last(state["y"]), last(xt.grad), np.transpose(wt.grad.numpy(), np.argsort(perm))
  return step, results


SETTLE_SECONDS = 0.02


def time_in_turn(fns: dict[str, Callable], rounds: int, settle: float = SETTLE_SECONDS) -> dict[str, float]:
  """Median seconds of each no-argument function, timed once per round in turn.

  Each timed call follows a pause of `settle` seconds and an untimed call of
  the same function: PyTorch's OpenMP threads spin for some ms after a call
  (GOMP_SPINCOUNT) and would slow whatever ran right after it, and the
  untimed call wakes the function's own threads.
  """
  import time
  times = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      if settle:
        time.sleep(settle)
        jax.block_until_ready(f())
      t0 = time.perf_counter()
      jax.block_until_ready(f())
      times[k].append(time.perf_counter() - t0)
  return {k: float(np.median(v)) for k, v in times.items()}


def layer_inputs(layer: ConvLayer, seed: int = 0):
  """Random x, w (scaled by 1/sqrt(fan-in)) and a random cotangent for the output."""
  kx, kw, kc = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, layer.x_shape, jnp.float32)
  fan_in = math.prod(layer.w_shape[:-1])
  w = jax.random.normal(kw, layer.w_shape, jnp.float32) / np.sqrt(fan_in)
  ct = jax.random.normal(kc, layer.out_shape, jnp.float32)
  return x, w, ct


def compare(layer: ConvLayer, impl: str, got, ref) -> float:
  """Largest error of (y, dx, dw) relative to lax's magnitude; raises WrongResult."""
  worst = 0.0
  for name, a, b in zip(("y", "dx", "dw"), got, ref):
    if a.shape != b.shape:
      raise WrongResult(f"{impl} on {layer.describe()}: {name} shape {a.shape} != lax {b.shape}")
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    err = float(jnp.max(jnp.abs(a - b))) / scale
    if not np.isfinite(err) or err > REL_TOL:
      raise WrongResult(f"{impl} on {layer.describe()}: {name} differs from lax "
                        f"(max error {err:.2e} of max|lax|, tolerance {REL_TOL:g})")
    worst = max(worst, err)
  return worst


def skip_reason(layer: ConvLayer, impl: str, *, explicit: bool) -> str | None:
  """Why an impl is not timed on this layer by default (None: time it)."""
  if impl == "pallas" and jax.devices()[0].platform == "cpu" and not explicit:
    return "pallas runs in interpret mode on CPU: not a speed measurement (ask with --impls)"
  taps = math.prod(layer.w_shape[:-2])
  if impl in ("direct", "matrix") and taps > MAX_UNROLLED_TAPS:
    return (f"{impl}: {taps} kernel taps, one unrolled op each (compiles for minutes); "
            f"cap {MAX_UNROLLED_TAPS}")
  if impl == "matrix" and layer.kind == "conv":
    nnz = matrix_nnz(layer)
    if nnz > MATRIX_MAX_NNZ:
      return (f"matrix: {nnz / 1e6:.0f}M nonzeros per image "
              f"({nnz * BCOO_BYTES_PER_NNZ / 2**30:.1f} GiB), over the {MATRIX_MAX_NNZ / 1e6:.0f}M cap")
  return None


def bench_layer(layer: ConvLayer, impls: Sequence[str], *, steps: int, warmup: int,
                budget: float | None, peak_gflops: float | None, explicit: bool = False,
                memory: bool = False, fns: dict[str, Callable] | None = None,
                peers: bool = False) -> list[dict]:
  """Rows (one per impl) for one layer: status, seconds, GFLOP/s, fraction of peak.

  fns: optional ``f(x, w)`` per impl name, run instead of `layer_fn` (a variant
  under test); every impl is checked against "lax" before it is timed.
  peers: add a "torch" row (PyTorch's conv forward + backward on the same
  arrays, checked against lax too), timed in turn with the "auto" row over
  `steps` rounds; both rows then carry that comparison (`vs_torch_fwdbwd`).
  """
  fns = dict(fns or {})
  fn = lambda impl: fns.get(impl) or layer_fn(layer, impl)
  x, w, ct = layer_inputs(layer)
  ref_g = jax.jit(fwd_bwd(layer_fn(layer, "lax")))
  ref = None
  rows = []
  for impl in impls:
    row = {"model": layer.model, "layer": layer.name, "kind": layer.kind,
           "shape": layer.describe(), "count": layer.count, "impl": impl,
           "flops_fwd": layer.flops, "status": "ok", "note": ""}
    if layer.kind == "conv":
      row["matrix_nnz"] = matrix_nnz(layer)
      row["matrix_mb"] = row["matrix_nnz"] * BCOO_BYTES_PER_NNZ / 2**20
    rows.append(row)
    reason = skip_reason(layer, impl, explicit=explicit)
    if reason:
      row.update(status="skipped", note=reason)
      continue
    f = jax.jit(fn(impl))
    g = ref_g if impl == "lax" and impl not in fns else jax.jit(fwd_bwd(fn(impl)))
    try:  # correctness first: the same compiled g is then timed
      if ref is None:
        ref = jax.block_until_ready(ref_g(x, w, ct))
      row["max_rel_error"] = compare(layer, impl, g(x, w, ct), ref)
    except WrongResult as e:
      row.update(status="wrong", note=str(e))
      continue
    except Exception as e:  # an impl that does not run on this shape: say why, go on
      msg = str(e).splitlines()[0][:160] if str(e) else ""
      row.update(status="error", note=f"{type(e).__name__}: {msg}")
      continue
    try:
      tf = time_fn(f, x, w, steps=steps, warmup=warmup, budget=budget)
      tg = time_fn(g, x, w, ct, steps=steps, warmup=warmup, budget=budget)
    except Exception as e:  # e.g. out of memory on a big shape
      row.update(status="error", note=f"{type(e).__name__} while timing: {str(e)[:120]}")
      continue
    row.update(fwd_s=tf.median, fwdbwd_s=tg.median,
               gflops_fwd=layer.flops / tf.median / 1e9,
               gflops_fwdbwd=3 * layer.flops / tg.median / 1e9,
               note="; ".join(n for n in (tf.note, tg.note) if n))
    if impl == "auto":
      row["route"] = auto_route(layer)
      row["note"] = "; ".join(n for n in (row["route"], row["note"]) if n)
    if peak_gflops:
      row["frac_peak_fwd"] = row["gflops_fwd"] / peak_gflops
      row["frac_peak_fwdbwd"] = row["gflops_fwdbwd"] / peak_gflops
    if memory:
      mem = compiled_memory_mb(g, x, w, ct)
      if mem:
        row["fwdbwd_temp_mb"] = mem["temp_mb"]
  if peers:
    rows.append(_torch_row(layer, rows, x, w, ct, ref, steps=steps, warmup=warmup, fns=fns,
                           peak_gflops=peak_gflops))
  lax_row = next((r for r in rows if r["impl"] == "lax" and "fwdbwd_s" in r), None)
  if lax_row:
    for r in rows:
      if "fwdbwd_s" in r:
        if "fwd_s" in r:
          r["vs_lax_fwd"] = r["fwd_s"] / lax_row["fwd_s"]
        r["vs_lax_fwdbwd"] = r["fwdbwd_s"] / lax_row["fwdbwd_s"]
  return rows


def _torch_row(layer, rows, x, w, ct, ref, *, steps, warmup, fns, peak_gflops) -> dict:
  """The "torch" row of `bench_layer`: checked against lax, then timed in turn with "auto"."""
  row = {"model": layer.model, "layer": layer.name, "kind": layer.kind, "shape": layer.describe(),
         "count": layer.count, "impl": "torch", "flops_fwd": layer.flops, "status": "ok", "note": ""}
  made = torch_layer_step(layer, x, w, ct)
  if made is None:
    row.update(status="skipped", note="PyTorch is not installed (pip install -e '.[peers]')")
    return row
  step, results = made
  import torch
  row["version"] = torch.__version__
  step()
  if ref is None:
    ref = jax.block_until_ready(jax.jit(fwd_bwd(layer_fn(layer, "lax")))(x, w, ct))
  try:
    row["max_rel_error"] = compare(layer, "torch", [jnp.asarray(a) for a in results()], ref)
  except WrongResult as e:
    row.update(status="wrong", note=str(e))
    return row
  auto = next((r for r in rows if r["impl"] == "auto" and "fwdbwd_s" in r), None)
  turn = {"torch": step}
  if auto is not None:
    g = jax.jit(fwd_bwd((fns or {}).get("auto") or layer_fn(layer, "auto")))
    jax.block_until_ready(g(x, w, ct))
    turn["auto"] = lambda: g(x, w, ct)
  for f in turn.values():
    for _ in range(warmup):
      f()
  med = time_in_turn(turn, max(steps, 1))
  row.update(fwdbwd_s=med["torch"], gflops_fwdbwd=3 * layer.flops / med["torch"] / 1e9,
             note="in turn with auto" if auto is not None else "")
  if peak_gflops:
    row["frac_peak_fwdbwd"] = row["gflops_fwdbwd"] / peak_gflops
  if auto is not None:
    auto["fwdbwd_s_in_turn"] = med["auto"]
    auto["vs_torch_fwdbwd"] = row["auto_vs_torch"] = med["auto"] / med["torch"]
  return row


def scaled(layer: ConvLayer, *, batch: int, image_size: int, base_size: int) -> ConvLayer:
  """The same layer at another batch and input image size (spatial dims scale together)."""
  f = image_size / base_size

  def sc(shape):
    return (batch, *(max(1, int(round(s * f))) for s in shape[1:-1]), shape[-1])
  return dataclasses.replace(layer, x_shape=sc(layer.x_shape), out_shape=sc(layer.out_shape))
