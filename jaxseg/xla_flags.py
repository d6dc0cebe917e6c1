"""XLA:CPU flags that the `jaxseg` command adds to ``XLA_FLAGS`` before JAX starts.

``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``: jaxlib
0.10 runs each convolution through YNNPACK by default; without it XLA:CPU
uses its own convolution kernels, which were faster for every conv shape of
the models on the CPUs measured (experiments/bench/RESULTS.md, session 3).
YNNPACK stays on for dots, reductions and elementwise fusions.

Flags are read once, when JAX creates its CPU client, so they are set in the
console entry point, before anything imports JAX; a flag the user already has
in ``XLA_FLAGS`` (by name, whatever its value) is left as it is, and
``JAXSEG_XLA_FLAGS=0`` adds none. Library users who want the same put the
flag in ``XLA_FLAGS`` themselves. The flag only concerns the CPU backend.
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
OPT_OUT = "JAXSEG_XLA_FLAGS"  # "0": leave XLA_FLAGS alone


def _name(flag: str) -> str:
  return flag.split("=", 1)[0]


def with_flags(current: str, flags=CPU_FLAGS) -> str:
  """``current`` (an XLA_FLAGS value) with each of ``flags`` whose name it lacks appended."""
  have = {_name(f) for f in current.split()}
  extra = [f for f in flags if _name(f) not in have]
  return " ".join(current.split() + extra)


def apply(environ=None) -> None:
  """Add `CPU_FLAGS` to ``environ["XLA_FLAGS"]`` (default: this process's) unless opted out."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, "1") == "0":
    return
  value = with_flags(environ.get("XLA_FLAGS", ""))
  if value:
    environ["XLA_FLAGS"] = value
