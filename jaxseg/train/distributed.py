"""Multi-process (multi-host) start-up: `jax.distributed.initialize`."""

from __future__ import annotations

_initialized = False


def initialize(coordinator: str | None, num_processes: int, process_id: int) -> None:
  """Joins the run of `num_processes` processes coordinated by process 0 at `coordinator`.

  Must run before JAX touches a device. On CPUs the cross-process
  collectives need gloo. `coordinator="auto"` lets JAX detect the cluster
  (Slurm, Open MPI, ...) itself. A no-op for a single process.
  """
  global _initialized
  if _initialized or (coordinator is None and num_processes == 1):
    return
  import jax
  # Only affects CPU collectives; harmless on GPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  _initialized = True


def is_primary() -> bool:
  import jax
  return jax.process_index() == 0
