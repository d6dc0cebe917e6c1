"""3-D conv layers of a base-16 3-D U-Net at a 32x64x64 patch: fwd + dx + dW, jaxseg forms vs PyTorch.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
    .venv/bin/python experiments/bench/micro/mb_conv3d.py [--rounds 5] [--forms lax,auto,direct,winograd3d,winograd3d_composed,im2col] [--batch 2] [--calls 1]

Each form is checked against XLA's values first (max error relative to XLA's
scale), then timed: median of the rounds, each round one timed call of every
form in turn, each after a 20 ms pause and an untimed call of the same form
(PyTorch's OpenMP threads spin for some ms after a call and would slow
whatever ran next; the untimed call wakes the form's own threads). With
--calls K a timed sample is the mean of K calls back to back, as in a train
step, where one layer's calls follow others' with the threads awake. (and PyTorch's conv3d forward + backward with the same cotangent, if
installed). The layers are the table of issue 19 (3x3x3 SAME, stride 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

# D, H, W, C_in, C_out
LAYERS = [(32, 64, 64, 1, 16), (32, 64, 64, 16, 16), (16, 32, 32, 16, 32), (16, 32, 32, 32, 32),
          (8, 16, 16, 32, 64), (8, 16, 16, 64, 64), (4, 8, 8, 64, 128), (4, 8, 8, 128, 128)]


def jax_fn(form, geo, policy):
  from jaxseg import ops
  from jaxseg.ops import auto
  from jaxseg.ops.cpu import direct, winograd3d
  from jaxseg.ops.xla import conv_lax
  f = {"lax": lambda x, w: conv_lax(x, w, geo),
       "auto": lambda x, w: auto.conv_auto(x, w, geo, policy),
       "direct": lambda x, w: direct.conv_geo(x, w, geo),
       "winograd3d": lambda x, w: winograd3d.conv_geo(x, w, geo),
       "winograd3d_composed": lambda x, w: winograd3d.conv3x3x3_composed(x, w),
       "im2col": lambda x, w: ops.conv(x, w, stride=1, padding="SAME", impl="im2col")}[form]

  def step(x, w, g):
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(g))
  return jax.jit(step)


def torch_fn(x, w, g):
  import torch
  xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).requires_grad_(True)
  wt = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (4, 3, 0, 1, 2)))).requires_grad_(True)
  gt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1)))

  def step():
    xt.grad = wt.grad = None
    y = torch.nn.functional.conv3d(xt, wt, padding=1)
    y.backward(gt)
    return y
  return step


def interleaved_medians(steps: dict, rounds: int, calls: int) -> dict:
  """Median ms of each step() over `rounds` rounds, each round one sample of every step in turn;
  a sample is the mean of `calls` calls, after a 20 ms pause and an untimed call."""
  for s in steps.values():
    s()
  times = {k: [] for k in steps}
  for _ in range(rounds):
    for k, s in steps.items():
      time.sleep(0.02)   # PyTorch's OpenMP threads spin for some ms after a call (GOMP_SPINCOUNT)
      s()                # untimed: wakes this form's threads
      t0 = time.perf_counter()
      for _ in range(calls):
        s()
      times[k].append((time.perf_counter() - t0) / calls)
  return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--calls", type=int, default=1,
                 help="back-to-back calls per timed sample (its time is their mean)")
  p.add_argument("--forms", default="lax,auto")
  p.add_argument("--layers", default=None, help="indices into LAYERS, comma-separated")
  args = p.parse_args(argv)
  from jaxseg.ops import DEFAULT_POLICY, auto
  from jaxseg.ops._common import conv_geometry
  try:
    import torch
    torch.set_num_threads(2)
  except ImportError:
    torch = None
  forms = args.forms.split(",")
  chosen = [LAYERS[int(i)] for i in args.layers.split(",")] if args.layers else LAYERS
  print(f"batch {args.batch}, {args.rounds} rounds; forms {forms}" + (f", torch {torch.__version__}" if torch else ""))
  print("| D,H,W,Cin,Cout | route | " + " | ".join(f"{f} ms" for f in forms) +
        (" | torch ms | " + " | ".join(f"{f}/torch" for f in forms) if torch else "") + " | max rel err |")
  totals = {f: 0.0 for f in forms + ["torch"]}
  for d, h, w_, ci, co in chosen:
    r = np.random.default_rng(0)
    x = r.standard_normal((args.batch, d, h, w_, ci)).astype(np.float32)
    w = (r.standard_normal((3, 3, 3, ci, co)) / np.sqrt(27 * ci)).astype(np.float32)
    g = r.standard_normal((args.batch, d, h, w_, co)).astype(np.float32)
    geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)
    route = auto.conv_route(geo, batch=args.batch, policy=DEFAULT_POLICY)
    fns = {f: jax_fn(f, geo, DEFAULT_POLICY) for f in forms}
    # XLA's values, whether or not "lax" is timed
    ref = [np.asarray(a) for a in (fns.get("lax") or jax_fn("lax", geo, DEFAULT_POLICY))(x, w, g)]
    err = 0.0
    for f, fn in fns.items():
      out = fn(x, w, g)
      err = max(err, *(float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))) for a, b in zip(out, ref)))
    # JAX's operands as device arrays, as PyTorch's are tensors (numpy operands would be copied in
    # on every call and timed with it)
    xj, wj, gj = jax.device_put((x, w, g))
    steps = {f: (lambda fn=fn: jax.block_until_ready(fn(xj, wj, gj))) for f, fn in fns.items()}
    if torch:
      steps["torch"] = torch_fn(x, w, g)
    med = interleaved_medians(steps, args.rounds, args.calls)
    for k, v in med.items():
      totals[k] += v
    row = f"| {d},{h},{w_},{ci},{co} | {route} | " + " | ".join(f"{med[f]:.1f}" for f in forms)
    if torch:
      row += f" | {med['torch']:.1f} | " + " | ".join(f"{med[f] / med['torch']:.2f}" for f in forms)
    print(row + f" | {err:.1e} |", flush=True)
  row = "| sum | | " + " | ".join(f"{totals[f]:.1f}" for f in forms)
  if torch:
    row += f" | {totals['torch']:.1f} | " + " | ".join(f"{totals[f] / totals['torch']:.2f}" for f in forms)
  print(row + " | |")


if __name__ == "__main__":
  main()
