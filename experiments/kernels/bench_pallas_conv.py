"""Benchmark of the Pallas conv kernels against XLA's lax.conv on a GPU.

Usage (on a machine with an NVIDIA GPU, after `pip install -e '.[cuda12]'`):

  .venv/bin/python experiments/kernels/bench_pallas_conv.py            # all cases
  .venv/bin/python experiments/kernels/bench_pallas_conv.py --grad     # forward + backward
  .venv/bin/python experiments/kernels/bench_pallas_conv.py --block-m 128 --block-n 64 --block-k 32

Every case is checked against lax (float32, precision HIGHEST) before it is
timed; a mismatch stops the script with exit code 1. Then both are timed
(median of --iters runs after warm-up) and reported as ms and TFLOP/s
(2 * multiply-adds of the dense conv / time, the same count for both).
`--smoke` runs tiny cases in interpret mode on the CPU (checks the script
itself; the times mean nothing).
"""

import argparse
import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from kernels.conv import BlockSizes, conv_pallas
from kernels.conv_transpose import conv_transpose_pallas

# name, kind, input shape (N, H, W, C), kernel hw, output channels, stride
CASES = (
    ("fcn_conv1 5x5 1->100 @256", "conv", (8, 256, 256, 1), (5, 5), 100, 2),
    ("3x3 64->64 @128", "conv", (8, 128, 128, 64), (3, 3), 64, 1),
    ("3x3 128->128 @64", "conv", (8, 64, 64, 128), (3, 3), 128, 1),
    ("3x3 256->256 @32", "conv", (8, 32, 32, 256), (3, 3), 256, 1),
    ("3x3/2 64->128 @128", "conv", (8, 128, 128, 64), (3, 3), 128, 2),
    ("fcn_deconv 31x31/16 2->2 @16", "deconv", (8, 16, 16, 2), (31, 31), 2, 16),
)
SMOKE_CASES = (
    ("smoke 3x3 4->8", "conv", (1, 8, 8, 4), (3, 3), 8, 1),
    ("smoke deconv 7x7/4", "deconv", (1, 2, 2, 2), (7, 7), 2, 4),
)


def lax_conv(x, w, stride):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def lax_deconv(y, w, stride, out_hw):
  """Adjoint of the SAME conv at size out_hw, through XLA's own transpose rule."""
  x0 = jnp.zeros((y.shape[0],) + out_hw + (w.shape[2],), y.dtype)
  _, vjp = jax.vjp(lambda x: lax_conv(x, w, stride), x0)
  return vjp(y)[0]


def flops(kind, x_shape, khw, cout, stride):
  n, h, w, c = x_shape
  if kind == "conv":
    return 2 * n * -(-h // stride) * -(-w // stride) * khw[0] * khw[1] * c * cout
  return 2 * n * h * w * khw[0] * khw[1] * c * cout      # every input pixel meets every tap


def timed(fn, *args, iters):
  jax.block_until_ready(fn(*args))                   # compile + warm-up
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def with_grad(f):
  """Forward + backward w.r.t. both inputs."""
  return jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2) / 2, argnums=(0, 1))


def run_case(case, args, block_sizes, interpret):
  name, kind, x_shape, khw, cout, stride = case
  rng = np.random.default_rng(0)
  if kind == "conv":
    w_shape = khw + (x_shape[-1], cout)
    pallas = lambda a, b: conv_pallas(a, b, stride=stride, block_sizes=block_sizes,
                                      interpret=interpret)
    xla = lambda a, b: lax_conv(a, b, stride)
  else:
    w_shape = khw + (cout, x_shape[-1])
    out_hw = (x_shape[1] * stride, x_shape[2] * stride)
    pallas = lambda a, b: conv_transpose_pallas(a, b, stride=stride, block_sizes=block_sizes,
                                                interpret=interpret)
    xla = lambda a, b: lax_deconv(a, b, stride, out_hw)
  x = jnp.asarray(rng.normal(size=x_shape), args.dtype)
  w = jnp.asarray(rng.normal(size=w_shape) / np.sqrt(np.prod(w_shape[:-1])), args.dtype)
  if args.grad:
    pallas, xla = with_grad(pallas), with_grad(xla)
  pallas, xla = jax.jit(pallas), jax.jit(xla)

  # Correctness first: against lax at full float32 precision.
  with jax.default_matmul_precision("highest"):
    want = jax.jit(lambda a, b: xla(a, b))(x, w)
  got = pallas(x, w)
  err = 0.0
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, r = np.asarray(g, np.float32), np.asarray(r, np.float32)
    e = float(np.max(np.abs(g - r)) / (np.max(np.abs(r)) + 1e-30))
    err = max(err, e if np.isfinite(e) else np.inf)   # a NaN must not pass
  if not err <= args.rtol:
    print(f"FAIL {name}: max |pallas - lax| / max |lax| = {err:.2e} > {args.rtol:.0e}")
    return False

  fl = flops(kind, x_shape, khw, cout, stride) * (3 if args.grad else 1)
  t_p = timed(pallas, x, w, iters=args.iters)
  t_x = timed(xla, x, w, iters=args.iters)
  print(f"{name:32s} {'fwd+bwd' if args.grad else 'fwd':8s} "
        f"pallas {t_p * 1e3:9.3f} ms {fl / t_p / 1e12:7.2f} TFLOP/s   "
        f"lax {t_x * 1e3:9.3f} ms {fl / t_x / 1e12:7.2f} TFLOP/s   "
        f"speed-up {t_x / t_p:5.2f}x   (rel. err {err:.1e})")
  return True


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--grad", action="store_true", help="time forward + backward")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--block-m", type=int, default=64)
  p.add_argument("--block-n", type=int, default=None)
  p.add_argument("--block-k", type=int, default=None)
  p.add_argument("--num-warps", type=int, default=4)
  p.add_argument("--num-stages", type=int, default=2)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
  p.add_argument("--rtol", type=float, default=None,
                 help="max error relative to max |lax| (default 2e-2 for float32: "
                      "Triton's dot may use TF32; 5e-2 for 16-bit types)")
  p.add_argument("--smoke", action="store_true",
                 help="tiny cases in interpret mode on the CPU (checks the script only)")
  args = p.parse_args(argv)
  if args.rtol is None:
    args.rtol = 2e-2 if args.dtype == "float32" else 5e-2
  if not args.smoke and jax.default_backend() != "gpu":
    sys.exit("no GPU found: run on a machine with a CUDA GPU, or use --smoke")
  block_sizes = BlockSizes(args.block_m, args.block_n, args.block_k, args.num_warps,
                           args.num_stages)
  print(f"jax {jax.__version__}, device {jax.devices()[0].device_kind}, {block_sizes}")
  ok = all([run_case(c, args, block_sizes, interpret=args.smoke)
            for c in (SMOKE_CASES if args.smoke else CASES)])
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
