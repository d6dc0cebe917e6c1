"""The one place that picks how the Pallas kernels are compiled.

On a CPU the kernels run in Pallas interpret mode. For GPUs the kernels use
the Triton backend: JAX 0.10's default Mosaic GPU lowering rejects `jnp.dot`
in a kernel body unless it is written with Mosaic's own wgmma primitives
(Hopper only), while Triton lowers it for Ampere and Hopper. Triton is
deprecated upstream from JAX 0.11, which is why pyproject pins jax<0.11; a
move to Mosaic GPU changes only this file and the kernel bodies.
"""

import jax
from jax.experimental.pallas import triton as pl_triton

BACKEND = "triton"
# What the lowered text of a compiled (non-interpret) kernel call contains.
GPU_CALL_TARGETS = ("__gpu$xla.gpu.triton", "mosaic_gpu")


def resolve_interpret(interpret):
  """None -> True on the CPU backend, False elsewhere; booleans pass through."""
  if interpret is None:
    return jax.default_backend() == "cpu"
  return bool(interpret)


def compiler_params(*, num_warps=4, num_stages=2):
  """Compiler parameters for `pl.pallas_call` on the chosen GPU backend."""
  return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def next_power_of_2(n):
  return 1 << max(int(n) - 1, 0).bit_length()


def round_up(n, m):
  return -(-n // m) * m
