"""Transparent huge pages for XLA:CPU's buffers: the `jaxseg` command re-executes itself once.

XLA:CPU allocates each step's large buffers (activations, gradients, tens of
MB each) with glibc's malloc, which serves them by fresh ``mmap`` calls and
returns them at the end of the step; every step then page-faults its whole
working set in again, 4 KiB at a time, which made memory-bound ops several
times slower (figures: experiments/bench/RESULTS.md, session 3).

glibc >= 2.35 asks the kernel for transparent huge pages on its large
allocations when started with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``. The
tunable is read when a process starts, so the computing subcommands of
`jaxseg` (`jaxseg.cli.COMPUTING`) re-execute themselves once with it added, before JAX is
imported: same PID, arguments, stdin/stdout. Set ``JAXSEG_HUGEPAGES=0`` to
opt out. Library users who want the same set the variable before starting
Python. Without glibc >= 2.35 or with THP disabled ("never") nothing happens.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "JAXSEG_HUGEPAGES"          # "0": never re-execute
_DONE = "JAXSEG_HUGEPAGES_REEXEC"     # set in the re-executed process
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the running glibc, or None (not glibc)."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, ValueError, OSError, TypeError):
    return None


def thp_available(path: str = THP_SETTING) -> bool:
  """Whether the kernel gives transparent huge pages to madvise()d memory."""
  try:
    with open(path) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def wanted(environ=None, *, libc=..., thp=..., platform: str | None = None) -> bool:
  """Whether `reexec_if_needed` would re-execute (the arguments, if given, replace what
  this machine has: libc a (major, minor) or None for not glibc, thp a bool)."""
  environ = os.environ if environ is None else environ
  platform = sys.platform if platform is None else platform
  if platform != "linux" or environ.get(OPT_OUT, "1") == "0" or environ.get(_DONE):
    return False
  if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
    return False                                 # already chosen, either way
  libc = glibc_version() if libc is ... else libc
  thp = thp_available() if thp is ... else thp
  return bool(libc and libc >= (2, 35) and thp)


def environ_with_tunable(environ) -> dict:
  """A copy of `environ` with the tunable appended to GLIBC_TUNABLES and the guard set."""
  env = dict(environ)
  old = env.get("GLIBC_TUNABLES", "")
  env["GLIBC_TUNABLES"] = f"{old}:{TUNABLE}" if old else TUNABLE
  env[_DONE] = "1"
  return env


def command_line(argv: list[str]) -> list[str]:
  """How to start this command again: the console script itself, else ``python -m jaxseg``."""
  exe = argv[0] if argv else ""
  if exe and not exe.endswith(".py") and os.path.isfile(exe) and os.access(exe, os.X_OK):
    return [exe] + list(argv[1:])
  return [sys.executable, "-m", "jaxseg"] + list(argv[1:])


def reexec_if_needed(argv: list[str]) -> None:
  """Re-execute with huge pages on if `wanted`; returns only if not (or if exec fails)."""
  if not wanted():
    return
  cmd = command_line(argv)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(cmd[0], cmd, environ_with_tunable(os.environ))
  except OSError:
    return                                       # carry on without huge pages
