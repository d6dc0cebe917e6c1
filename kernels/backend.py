"""The one place that picks how the Pallas kernels are compiled.

On a CPU the kernels run in Pallas interpret mode. For GPUs the kernels use
the Triton backend: JAX 0.10's default Mosaic GPU lowering rejects `jnp.dot`
in a kernel body unless it is written with Mosaic's own wgmma primitives
(Hopper only), while Triton lowers it for Ampere and Hopper. Triton is
deprecated upstream from JAX 0.11, which is why pyproject pins jax<0.11; a
move to Mosaic GPU changes only this file and the kernel bodies. Which of
the two runs is decided when a function is lowered (`pallas_call`), never
from the backend seen while tracing.
"""

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

BACKEND = "triton"
# What the lowered text of a compiled (non-interpret) kernel call contains.
GPU_CALL_TARGETS = ("__gpu$xla.gpu.triton", "mosaic_gpu")


def resolve_interpret(interpret):
  """None (chosen per platform when lowering, see `pallas_call`) or a boolean."""
  return None if interpret is None else bool(interpret)


def pallas_call(kernel, *, interpret, **kw):
  """`pl.pallas_call(kernel, interpret=..., **kw)`; with interpret=None the choice is made when
  lowering (`lax.platform_dependent`): interpret mode on the CPU, the compiled kernel on every
  other platform. So one traced function runs interpreted here and holds the GPU kernel when
  lowered for CUDA. Called inside the kernels' custom VJP rules, never differentiated through."""
  if interpret is not None:
    return pl.pallas_call(kernel, interpret=interpret, **kw)

  def call(*args):
    return jax.lax.platform_dependent(
        *args, cpu=lambda *a: pl.pallas_call(kernel, interpret=True, **kw)(*a),
        default=lambda *a: pl.pallas_call(kernel, interpret=False, **kw)(*a))
  return call


def compiler_params(*, num_warps=4, num_stages=2):
  """Compiler parameters for `pl.pallas_call` on the chosen GPU backend."""
  return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def next_power_of_2(n):
  return 1 << max(int(n) - 1, 0).bit_length()


def round_up(n, m):
  return -(-n // m) * m
