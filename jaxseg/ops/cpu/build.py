"""Compile `_cpu_conv.cc`, load it and register its handlers with XLA's FFI.

The source is compiled on first use with the machine's C++ compiler
(``$CXX``, else ``g++`` / ``c++`` / ``clang++``; ``-O3 -march=native``) into a
cache directory (``$JAXSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxseg`` or
``~/.cache/jaxseg``), keyed by the source, the compiler command, jaxlib's
version and the CPU. Both variables are read in `default_options` only.

The kernels are used only when the compiler targets 512-bit vectors (AVX-512):
their register tiling is written for 32 of them. A failed compile is logged
once and leaves XLA's convolution in place (`available` is False); it never
fails a run.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("jaxseg.ops.cpu")

SOURCE = Path(__file__).with_name("_cpu_conv.cc")
# FFI target name -> exported handler symbol
TARGETS = {"jaxseg_conv_forward": "JaxsegConvForward", "jaxseg_conv_weight_grad": "JaxsegConvWeightGrad",
           "jaxseg_conv_input_grad": "JaxsegConvInputGrad",
           "jaxseg_conv_transpose_forward": "JaxsegConvTransposeForward",
           "jaxseg_batched_matmul": "JaxsegBatchedMatmul", "jaxseg_batched_matmul_tn": "JaxsegBatchedMatmulTN",
           "jaxseg_winograd_transform": "JaxsegWinogradTransform",
           "jaxseg_winograd3d_kernel": "JaxsegWinograd3dKernel",
           "jaxseg_winograd3d_transform": "JaxsegWinograd3dTransform",
           "jaxseg_winograd3d_product": "JaxsegWinograd3dProduct",
           "jaxseg_winograd3d_conv_forward": "JaxsegWinograd3dConvForward",
           "jaxseg_winograd3d_conv_backward": "JaxsegWinograd3dConvBackward"}
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")
VECTOR_BITS = 512


@dataclasses.dataclass(frozen=True)
class BuildOptions:
  """Where to compile: the compiler (a name or path; None: none found) and the cache directory."""
  compiler: str | None
  cache_dir: Path


def default_options() -> BuildOptions:
  """$CXX if set (and nothing else), else the first of g++, c++, clang++ on the PATH;
  $JAXSEG_CACHE_DIR, else $XDG_CACHE_HOME/jaxseg or ~/.cache/jaxseg."""
  if os.environ.get("CXX"):
    compiler = os.environ["CXX"]
  else:
    compiler = next(filter(None, map(shutil.which, ("g++", "c++", "clang++"))), None)
  if os.environ.get("JAXSEG_CACHE_DIR"):
    cache = Path(os.environ["JAXSEG_CACHE_DIR"])
  else:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = Path(base) / "jaxseg"
  return BuildOptions(compiler, cache)


def _cpu_id() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags", "Features", "CPU part"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor()


def build(options: BuildOptions) -> Path:
  """Compile `_cpu_conv.cc` (if not cached) and return the shared library's path.

  Raises RuntimeError with the compiler's message when it fails.
  """
  cxx = shutil.which(options.compiler) if options.compiler else None
  if cxx is None:
    raise RuntimeError(f"no C++ compiler found ({options.compiler!r} is not on the PATH)"
                       if options.compiler else "no C++ compiler found (install g++ or set $CXX)")
  import jax
  import jaxlib
  cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}"]
  key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(cmd), jaxlib.__version__,
                                  platform.machine(), _cpu_id()]).encode()).hexdigest()[:16]
  out = Path(options.cache_dir) / f"cpu_conv_{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  # Compile to a temporary name and rename: concurrent processes (pytest-xdist
  # workers) may build at once; each rename is atomic.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    proc = subprocess.run([*cmd, str(SOURCE), "-o", tmp], capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-2000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return out


def load(options: BuildOptions) -> ctypes.CDLL | None:
  """Build, load and register the kernels; None (and one log line) if they cannot be used here."""
  try:
    lib = ctypes.cdll.LoadLibrary(str(build(options)))
  except (RuntimeError, OSError) as e:
    log.warning("jaxseg cpu conv kernels unavailable (%s); using XLA's convolution", str(e).splitlines()[0])
    return None
  bits = lib.jaxseg_cpu_conv_vector_bits()
  if bits < VECTOR_BITS:
    log.info("jaxseg cpu conv kernels: %d-bit vectors only; using XLA's convolution", bits)
    return None
  import jax
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return lib


@functools.cache
def _loaded() -> ctypes.CDLL | None:
  # Cached for the process: XLA keeps the registered handlers, so the library stays loaded.
  return load(default_options())


def available() -> bool:
  """Whether the kernels are compiled, registered with XLA and target 512-bit vectors on this host."""
  return _loaded() is not None


def require() -> None:
  if not available():
    raise RuntimeError("jaxseg.ops.cpu: the C++ kernels are not available on this machine (see the log)")
