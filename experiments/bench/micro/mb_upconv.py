"""The U-Nets' up-convs (2x2/2 and 2x2x2/2 transposed convs): forward + both gradients, on the
`auto` routes "cpu_direct" (the C++ kernel that writes each phase's rows in place) and
"phase_rows" (one XLA GEMM per leading phase, then a stack), and PyTorch's conv_transpose.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
    .venv/bin/python experiments/bench/micro/mb_upconv.py [--rounds 9] [--calls 5]

Each route is checked against XLA's transposed conv first (largest error relative to XLA's
scale). Timing as in mb_conv3d.py: median of the rounds, each round one sample of every form in
turn, each after a 20 ms pause and an untimed call; a sample is the mean of --calls calls.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from mb_conv3d import interleaved_medians

# y shape (N, *spatial, C_in), C_out: unet3d_small's up-convs at batch 2 (32x64x64 patch) and
# unet_small's at batch 8 (256x256)
LAYERS = [((2, 4, 8, 8, 128), 64), ((2, 8, 16, 16, 64), 32), ((2, 16, 32, 32, 32), 16),
          ((8, 16, 16, 256), 128), ((8, 32, 32, 128), 64), ((8, 64, 64, 64), 32), ((8, 128, 128, 32), 16)]


def jax_fn(policy, stride, impl="auto"):
  from jaxseg import ops

  def step(y, w, g):
    z, vjp = jax.vjp(lambda y, w: ops.conv_transpose(y, w, stride=stride, impl=impl, policy=policy), y, w)
    return (z, *vjp(g))
  return jax.jit(step)


def torch_fn(y, w, g, nd):
  import torch
  yt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(y, -1, 1))).requires_grad_(True)
  # w (*k, C_out, C_in) -> PyTorch's (C_in, C_out, *k)
  wt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.moveaxis(w, -1, 0), -1, 1))).requires_grad_(True)
  gt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1)))
  f = torch.nn.functional.conv_transpose3d if nd == 3 else torch.nn.functional.conv_transpose2d

  def step():
    yt.grad = wt.grad = None
    z = f(yt, wt, stride=2)
    z.backward(gt)
    return z
  return step


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rounds", type=int, default=9)
  p.add_argument("--calls", type=int, default=1)
  args = p.parse_args(argv)
  from jaxseg import ops
  from jaxseg.ops import DEFAULT_POLICY
  try:
    import torch
    torch.set_num_threads(2)
  except ImportError:
    torch = None
  policies = {"cpu_direct": DEFAULT_POLICY,
              "phase_rows": dataclasses.replace(DEFAULT_POLICY, transpose_direct=False)}
  print(f"{args.rounds} rounds, {args.calls} calls a sample" + (f", torch {torch.__version__}" if torch else ""))
  print("| y shape | C_out | " + " | ".join(f"{k} ms" for k in policies) + (" | torch ms | cpu_direct/torch"
        if torch else "") + " | cpu_direct/phase_rows | max rel err |")
  totals = {k: 0.0 for k in list(policies) + ["torch"]}
  for y_shape, cout in LAYERS:
    nd = len(y_shape) - 2
    r = np.random.default_rng(0)
    y = r.standard_normal(y_shape).astype(np.float32)
    w = (r.standard_normal((2,) * nd + (cout, y_shape[-1])) / np.sqrt(y_shape[-1])).astype(np.float32)
    z_shape = (y_shape[0], *(2 * s for s in y_shape[1:-1]), cout)
    g = r.standard_normal(z_shape).astype(np.float32)
    for name, pol in policies.items():
      route = ops.conv_transpose_route(y_shape, w.shape, stride=2, platform="cpu", policy=pol)
      assert route == name, (name, route)
    fns = {k: jax_fn(pol, 2) for k, pol in policies.items()}
    ref = [np.asarray(a) for a in jax_fn(None, 2, impl="lax")(y, w, g)]
    err = 0.0
    for fn in fns.values():
      err = max(err, *(float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))
                       for a, b in zip(fn(y, w, g), ref)))
    yj, wj, gj = jax.device_put((y, w, g))
    steps = {k: (lambda fn=fn: jax.block_until_ready(fn(yj, wj, gj))) for k, fn in fns.items()}
    if torch:
      steps["torch"] = torch_fn(y, w, g, nd)
    med = interleaved_medians(steps, args.rounds, args.calls)
    for k, v in med.items():
      totals[k] += v
    row = f"| {'x'.join(map(str, y_shape))} | {cout} | " + " | ".join(f"{med[k]:.2f}" for k in policies)
    if torch:
      row += f" | {med['torch']:.2f} | {med['cpu_direct'] / med['torch']:.2f}"
    print(row + f" | {med['cpu_direct'] / med['phase_rows']:.2f} | {err:.1e} |", flush=True)
  row = "| sum | | " + " | ".join(f"{totals[k]:.2f}" for k in policies)
  if torch:
    row += f" | {totals['torch']:.2f} | {totals['cpu_direct'] / totals['torch']:.2f}"
  print(row + f" | {totals['cpu_direct'] / totals['phase_rows']:.2f} | |")


if __name__ == "__main__":
  main()
