"""Timing helpers: median wall time after compilation, GEMM peak, device, memory.

Every timed call ends with ``jax.block_until_ready``: JAX dispatches
asynchronously, so without it we would time the dispatch, not the work.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call of one function: median (what we report), min and all."""
  median: float
  min: float
  times: tuple[float, ...]
  compile_seconds: float
  note: str = ""

  @property
  def steps(self) -> int:
    return len(self.times)


def time_fn(fn: Callable[..., Any], *args, steps: int = 5, warmup: int = 1,
            budget: float | None = None) -> Timing:
  """Median seconds of ``fn(*args)`` after its first (compiling) call.

  With ``budget`` (seconds), fewer steps are timed when one call is slow, so
  that warmup + steps stay near the budget; at least one call is always timed.
  """
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_seconds = time.perf_counter() - t0
  note = ""
  times = []
  for _ in range(warmup):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  if budget is not None and times:
    fit = int(budget / max(times[-1], 1e-9))
    if fit < steps:
      note = f"budget {budget:g}s: {max(fit, 1)} of {steps} steps"
      steps = max(fit, 1)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return Timing(statistics.median(times), min(times), tuple(times), compile_seconds, note)


def gemm_peak(sizes=(1024, 1536, 2048), *, steps: int = 5) -> dict:
  """GFLOP/s of ``jnp.dot`` on square float32 matrices; the best is the peak.

  Measured in the same run as the convolutions so that fractions of it are
  comparable on a shared, noisy machine.
  """
  dot = jax.jit(jnp.dot)
  per_size = {}
  for n in sizes:
    ka, kb = jax.random.split(jax.random.key(n))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    t = time_fn(dot, a, b, steps=steps, warmup=1)
    per_size[n] = 2 * n**3 / t.median / 1e9
  return {"gflops": max(per_size.values()), "per_size": per_size}


def device_info() -> dict:
  """What we ran on: platform, device kind and count, JAX version, host cores."""
  from jaxseg.ops import cpu
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__,
          "host_cpus": os.cpu_count(), "load_avg": list(os.getloadavg()),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          # the C++ conv kernels of the auto route's CPU layers (jaxseg.ops.cpu)
          "cpu_conv_kernels": d.platform == "cpu" and cpu.available()}


def max_rss_mb() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mb() -> float | None:
  """Peak device memory from the runtime, where it keeps stats (GPUs); else None."""
  stats = jax.devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def compiled_memory_mb(jitted, *args) -> dict | None:
  """XLA's own memory plan for one call: arguments, outputs and temporaries."""
  try:
    m = jitted.lower(*args).compile().memory_analysis()
  except Exception:  # some backends do not implement it
    return None
  if m is None:
    return None
  return {"argument_mb": m.argument_size_in_bytes / 2**20,
          "output_mb": m.output_size_in_bytes / 2**20,
          "temp_mb": m.temp_size_in_bytes / 2**20}
