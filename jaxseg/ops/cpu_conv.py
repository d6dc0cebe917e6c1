"""Hand-written direct 2-D convolution kernels for the CPU (C++, through XLA's FFI).

`_cpu_conv.cc` holds two kernels, a convolution (any stride and padding) and
its weight gradient, with output channels in vector lanes and a strip of
output pixels in registers (read it: each is a loop over kernel rows and one
flat loop over the (column, channel) taps). For stride 1 the input gradient
is the same forward kernel with the kernel flipped, its channel axes swapped
and the pads mirrored (the transposed convolution of a stride-1 conv is a
conv with the flipped kernel); strided convs take XLA's input gradient (a
first layer's is dead code anyway).

The models' layers use them (`ops.conv.conv_lax_tuned`) where XLA:CPU's own
convolution is slow: few channels on large images, and first layers (see
`applies` for the rule and where it was measured). Everywhere else, and
whenever the kernels are not available, the XLA convolution runs.

The source is compiled on first use with the machine's C++ compiler
(``$CXX``, else ``g++`` / ``c++``; ``-O3 -march=native``) into a cache
directory (``$JAXSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxseg`` or
``~/.cache/jaxseg``), keyed by the source, the compiler command, jaxlib's
version and the CPU. The kernels are used only when the compiler targets
512-bit vectors (AVX-512): the register tiling is written for 32 of them.
``JAXSEG_CPU_KERNELS=0`` turns them off. A failed compile is logged once and
leaves the XLA convolution in place; it never fails a run.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError
from jaxseg.ops._common import ConvGeometry, conv_geometry, prod
from jaxseg.ops.conv import conv_lax
from jaxseg.ops.conv_grad import _varying

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_cpu_conv.cc")
TARGETS = {"jaxseg_conv_forward": "JaxsegConvForward", "jaxseg_conv_weight_grad": "JaxsegConvWeightGrad",
           "jaxseg_batched_matmul": "JaxsegBatchedMatmul", "jaxseg_batched_matmul_tn": "JaxsegBatchedMatmulTN",
           "jaxseg_winograd_transform": "JaxsegWinogradTransform"}
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")

# Which layers use the kernels (see `applies`): stride 1 with at most this many
# input channels times output channels and at least this many output pixels per image.
MAX_CHANNEL_PRODUCT = 256 * 128
MIN_PIXELS = 32 * 32
SMALL_PATCH = 64   # taps * C_in at or below which any conv (strided too) uses them
MIN_DX_CHANNELS = 16  # the input gradient by the kernel from this many input channels (else XLA's)

_state: dict = {}


def enabled() -> bool:
  return os.environ.get("JAXSEG_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
  if os.environ.get("JAXSEG_CACHE_DIR"):
    return Path(os.environ["JAXSEG_CACHE_DIR"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "jaxseg"


def _compiler() -> str | None:
  """$CXX if set (and nothing else), else the first of g++, c++, clang++ on the PATH."""
  if os.environ.get("CXX"):
    return shutil.which(os.environ["CXX"])
  return next(filter(None, map(shutil.which, ("g++", "c++", "clang++"))), None)


def _cpu_id() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags", "Features", "CPU part"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor()


def build() -> Path:
  """Compile `_cpu_conv.cc` (if not cached) and return the shared library's path.

  Raises RuntimeError with the compiler's message when it fails.
  """
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError(f"no C++ compiler found ({'$CXX=' + os.environ['CXX'] if os.environ.get('CXX') else 'install g++ or set $CXX'})")
  import jaxlib
  include = jax.ffi.include_dir()
  cmd = [cxx, *FLAGS, f"-I{include}"]
  key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(cmd), jaxlib.__version__,
                                  platform.machine(), _cpu_id()]).encode()).hexdigest()[:16]
  out = cache_dir() / f"cpu_conv_{key}.so"
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


def available() -> bool:
  """Whether the kernels are compiled, registered with XLA and target 512-bit vectors."""
  if "ok" not in _state:
    _state["ok"] = False
    if not enabled():
      return False
    try:
      lib = ctypes.cdll.LoadLibrary(str(build()))
      bits = lib.jaxseg_cpu_conv_vector_bits()
      if bits < 512:
        log.info("jaxseg cpu conv kernels: %d-bit vectors only; using XLA's convolution", bits)
        return False
      for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
      _state["lib"] = lib   # keeps the library loaded while XLA holds its handlers
      _state["ok"] = True
    except (RuntimeError, OSError) as e:
      log.warning("jaxseg cpu conv kernels unavailable (%s); using XLA's convolution", str(e).splitlines()[0])
  return _state["ok"]


def supports(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether the kernels compute this conv at all (regardless of speed): 2-D, float32, ungrouped, undilated."""
  return (geo.nd == 2 and geo.groups == 1 and all(d == 1 for d in geo.dilation)
          and jnp.dtype(dtype) == jnp.float32 and min(geo.out_shape) > 0)


def applies(geo: ConvGeometry, dtype=jnp.float32) -> bool:
  """Whether the models' layers use the kernels, on the CPU: up to middling channels on images >= 32^2.

  Stride-1 layers with C_in * C_out <= MAX_CHANNEL_PRODUCT and at least
  MIN_PIXELS output pixels per image (all of unet_small's 3x3 layers from
  256^2 down to 32^2; not its 16^2 bottom, nor the lab FCN's 16^2 200-300
  channel layers, where XLA's weight gradient is faster), and any layer whose
  taps * C_in <= SMALL_PATCH (a first layer: one input channel, the lab FCN's
  5x5/2 conv; a 1x1 head on 16 channels). Measured layer by layer against XLA's
  conv (forward and both gradients, `experiments/bench/micro/mb_cpu_conv.py`)
  and in the train step, variants in turn in one process
  (`experiments/bench/step_variants.py --variants cpu_conv_upto_182_32,
  cpu_conv_upto_128_32,cpu_conv_upto_128_64,base`: unet_small 0.959 / 0.995 /
  1.081 / 1.063 s for layers down to 32^2 with products <= 182^2 / 128^2, down
  to 64^2 <= 128^2, down to 64^2 <= 64^2; all layers incl. 16^2: 1.062 vs
  1.001 s for 128_32).
  """
  if jax.default_backend() != "cpu" or not supports(geo, dtype):
    return False
  small_channels = (all(s == 1 for s in geo.stride) and geo.cin * geo.cout <= MAX_CHANNEL_PRODUCT
                    and prod(geo.out_shape) >= MIN_PIXELS)
  first_layer = prod(geo.kernel) * geo.cin <= SMALL_PATCH
  return (small_channels or first_layer) and available()


def _attrs(geo: ConvGeometry) -> dict:
  (sh, sw), ((ph, _), (pw, _)) = geo.stride, geo.pads
  return dict(sh=np.int64(sh), sw=np.int64(sw), ph=np.int64(ph), pw=np.int64(pw))


def _vary_like(a, ref):
  """`a` cast to vary over the `jax.shard_map` axes `ref` varies over (an FFI call's result
  carries none; its values are per device)."""
  missing = _varying(ref) - _varying(a)
  return jax.lax.pcast(a, tuple(sorted(missing)), to="varying") if missing else a


def _require():
  if not available():
    raise RuntimeError("cpu_conv: the C++ kernels are not available on this machine (see the log)")


def _forward(x, w, geo: ConvGeometry):
  _require()
  co = w.shape[-1]
  pad = -co % 16   # the kernel loads whole vectors of output channels: zero columns up to a multiple of 16
  if pad:
    w = jnp.pad(w, ((0, 0),) * 3 + ((0, pad),))
  out = jax.ShapeDtypeStruct((x.shape[0], *geo.out_shape, co), x.dtype)
  return jax.ffi.ffi_call("jaxseg_conv_forward", out, vmap_method="sequential")(x, w, **_attrs(geo))


def _weight_grad(x, dy, geo: ConvGeometry):
  _require()
  out = jax.ShapeDtypeStruct((*geo.kernel, geo.cin, geo.cout), x.dtype)
  return jax.ffi.ffi_call("jaxseg_conv_weight_grad", out, vmap_method="sequential")(x, dy, **_attrs(geo))


def _input_grad(dy, w, geo: ConvGeometry):
  """dx: for stride 1, the conv of dy with the flipped, channel-swapped kernel and the pads mirrored
  (k - 1 - lo before); for strides > 1, `strided_input_grad`. With fewer than 16 input channels
  (a first layer, whose dx is dead code in a model) XLA's: the kernel would fill 1/16 of its lanes
  (the lab FCN's first conv in `jaxseg bench --what conv`: fwd+bwd 92 ms with the kernel's dx,
  58 ms for plain lax)."""
  if geo.cin < MIN_DX_CHANNELS:
    x_aval = jax.ShapeDtypeStruct((dy.shape[0], *geo.in_shape, geo.cin), dy.dtype)
    return jax.linear_transpose(lambda x: conv_lax(x, w, geo), x_aval)(dy)[0]
  if all(s == 1 for s in geo.stride):
    w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3)
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(geo.kernel, geo.pads))
    dgeo = geo._replace(in_shape=geo.out_shape, out_shape=geo.in_shape, pads=pads, cin=geo.cout, cout=geo.cin)
    return _forward(dy, w_t, dgeo)
  return strided_input_grad(dy, w, geo)


def strided_input_grad(dy, w, geo: ConvGeometry):
  """dx of a strided 2-D conv by stride phases: one stride-1 conv of dy per phase, by the forward kernel.

  Input i (padded: i + lo = m*s + r) receives dy[o] w[t] from the taps
  t = a*s + r, a = m - o: phase r is the stride-1 correlation of dy with the
  sub-kernel w[r::s] flipped (channel axes swapped), padded q_r - 1 before, on
  m in [0, out + q - 1) (q = ceil(k / s), the most taps a phase has). The
  phases are interleaved (`phase.interleave_phases`) and cropped to the input
  (`phase.crop_to_input`), as `conv_grad.col2im_input_grad` does with the same
  sums formed from one GEMM's columns instead. No multiplication by the zeros
  of a stride-dilated cotangent.
  """
  from jaxseg.ops import phase
  n, out, s = dy.shape[0], geo.out_shape, geo.stride
  q = phase.taps_per_phase(geo)
  m = tuple(o + qq - 1 for o, qq in zip(out, q))
  phases = []
  for r in itertools.product(range(s[0]), range(s[1])):
    sub = w[r[0]::s[0], r[1]::s[1]]                                 # taps a*s + r: (q_r0, q_r1, C_in, C_out)
    if 0 in sub.shape[:2]:                                          # kernel smaller than the stride: no taps
      phases.append(jnp.zeros((n, *m, geo.cin), dy.dtype))
      continue
    kern = jnp.swapaxes(sub[::-1, ::-1], 2, 3)                      # (q_r0, q_r1, C_out, C_in)
    pgeo = geo._replace(in_shape=out, out_shape=m, kernel=sub.shape[:2], stride=(1, 1),
                        pads=tuple((qr - 1, mm - o) for qr, mm, o in zip(sub.shape[:2], m, out)),
                        cin=geo.cout, cout=geo.cin)
    phases.append(_forward(dy, kern, pgeo))
  return phase.assemble_phases(phases, geo)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geo):
  return forward(x, w, geo)


def forward(x, w, geo: ConvGeometry):
  """The forward kernel alone (no VJP: for custom VJPs elsewhere, e.g. `conv_grad`'s)."""
  return _vary_like(_forward(x, w, geo), x)


def _conv_fwd(x, w, geo):
  return forward(x, w, geo), (x, w)


def _conv_bwd(geo, res, dy):
  x, w = res
  return _vary_like(_input_grad(dy, w, geo), x), _vary_like(_weight_grad(x, dy, geo), w)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x, w, *, stride=1, padding="SAME"):
  """2-D conv of x (N, H, W, C_in) with w (KH, KW, C_in, C_out) by the C++ kernels (float32).

  Same semantics as `jaxseg.ops.conv` (any stride, "SAME", "VALID" or explicit
  pads); differentiable: dW by the weight-gradient kernel, dx by the forward
  kernel (stride phases for strides > 1; XLA's below MIN_DX_CHANNELS input
  channels). Raises ConfigError for what `supports` rejects and
  RuntimeError when the kernels are not available on this machine.
  """
  geo = conv_geometry(x.shape, w.shape, stride=stride, padding=padding, dilation=1, groups=1)
  if not supports(geo, x.dtype):
    raise ConfigError(f"cpu_conv: only ungrouped, undilated 2-D float32 convs (got x {x.shape} {x.dtype}, w {w.shape})")
  _require()
  return conv_geo(x, w, geo)


def conv_geo(x, w, geo: ConvGeometry):
  """`conv` for a checked geometry (what `ops.conv.conv_lax_tuned` calls)."""
  return _conv(x, w, geo)
