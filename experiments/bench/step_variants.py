"""Train-step variants of a model, timed in turn in one process (before/after for proposals).

    .venv/bin/python experiments/bench/step_variants.py --model fcn --batch-size 8 \
        --image-size 256 --steps 3 --rounds 3 --variants base,no_winograd

Each variant is a value passed to the model -- a conv impl or a
`jaxseg.ops.ConvPolicy` for the `auto` route -- or the bare step; nothing is
patched. The variants:

- base: the models' default (conv_impl "auto", `DEFAULT_POLICY`);
- plain_step: the bench's bare step (no accuracy/Dice metrics in the step);
- lax: conv_impl "lax", plain XLA convs and XLA's autodiff everywhere;
- no_cpu_kernels: `auto` without the C++ kernels (XLA with GEMM gradients and phase transposes);
- no_cpu_direct: the C++ direct kernels off (few-channel and first layers back on XLA / GEMM
  gradients), Winograd kept: the layers as they ran before the direct kernels;
- no_winograd: the Winograd layers as they ran before it (C++ direct / GEMM backward / XLA);
- winograd_C_P: Winograd for layers with C_in, C_out >= C on at most P^2 output pixels;
- cpu_direct_upto_C_P: the C++ direct kernels for stride-1 layers with C_in * C_out <= C^2 on at
  least P^2 output pixels per image;
- strided_dx_col2im / strided_dx_xla: strided convs' input gradient as one GEMM + overlap-add /
  XLA's conv over the stride-dilated cotangent, instead of stride phases on the C++ kernel;
- no_gemm_grad: convs off the kernels take XLA's own gradients (no GEMM dW);
- stride1_gemm_dw: stride-1 convs with few output rows take GEMM dW whatever their patch size;
- stride1_xla_dw: every stride-1 conv takes XLA's weight gradient;
- transpose_xla: strided transposed convs as XLA's conv over the stride-dilated input (no phases);
- upconv_rows: kernel == stride transposed convs (2x2/2) as one XLA GEMM per row phase, stacked
  (before session 10), not the C++ kernel that writes the phases in place;
- upconv_d2s: the same as one conv + depth-to-space;
- winograd3d_products_V: 3-D Winograd's products form on at most V output voxels in the batch
  (the fused form above); no_winograd3d: no 3-D Winograd (the direct kernels).

Variants tried in earlier sessions that are no longer expressible (dropout PRNGs, ELU forms, pooling
forms, CE forms) and their figures are in experiments/bench/RESULTS.md.

XLA flags cannot change inside one process: compare them with
`flags_interleaved.py` instead. Like the `jaxseg` command, the script first
adds jaxseg's XLA flag to XLA_FLAGS and re-executes itself with glibc's
huge-page tunable (`jaxseg.xla_flags`, `jaxseg.hugepages`; the same opt-outs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys


def variant(name):
  """(conv_impl, conv_policy or None, step_kind) of a variant name."""
  from jaxseg.ops import DEFAULT_POLICY
  policy = lambda **kw: dataclasses.replace(DEFAULT_POLICY, **kw)
  fixed = {
      "base": ("auto", None, "product"),
      "plain_step": ("auto", None, "plain"),
      "lax": ("lax", None, "product"),
      "no_cpu_kernels": ("auto", policy(cpu_kernels=False), "product"),
      "no_cpu_direct": ("auto", policy(direct_max_channel_product=0, direct_max_patch=0), "product"),
      "no_winograd": ("auto", policy(winograd=False), "product"),
      "strided_dx_col2im": ("auto", policy(strided_dx="col2im"), "product"),
      "strided_dx_xla": ("auto", policy(strided_dx="xla"), "product"),
      "no_gemm_grad": ("auto", policy(gemm_grad=False), "product"),
      "stride1_gemm_dw": ("auto", policy(gemm_stride1_small_only=False), "product"),
      "stride1_xla_dw": ("auto", policy(gemm_max_rows_stride1=0), "product"),
      "transpose_xla": ("auto", policy(transpose_phase=False), "product"),
      "upconv_rows": ("auto", policy(transpose_direct=False), "product"),
      "upconv_d2s": ("auto", policy(transpose_direct=False, transpose_rows=False), "product"),
      "no_winograd3d": ("auto", policy(winograd_3d=False), "product"),
  }
  if name in fixed:
    return fixed[name]
  if name.startswith("winograd3d_products_"):
    return "auto", policy(winograd_3d_products_max_voxels=int(name.split("_")[2])), "product"
  if name.startswith("winograd_"):
    c, px = (int(v) for v in name.split("_")[1:])
    return "auto", policy(winograd_min_channels=c, winograd_max_pixels=px * px), "product"
  if name.startswith("cpu_direct_upto_"):
    c, px = (int(v) for v in name.split("_")[3:])
    return "auto", policy(direct_max_channel_product=c * c, direct_min_pixels=px * px), "product"
  raise SystemExit(f"unknown variant {name}")


def _same_settings_as_the_command():
  """XLA_FLAGS and huge pages as `jaxseg bench` has them (before JAX is imported)."""
  import os
  from jaxseg import hugepages, xla_flags
  xla_flags.apply()
  if hugepages.wanted():
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, hugepages.environ_with_tunable(os.environ))


def main(argv=None):
  if argv is None:
    _same_settings_as_the_command()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="fcn")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--patch-size", default=None, help="3-D models: the input volume D,H,W (e.g. 32,64,64)")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--variants", default="base,lax")
  args = p.parse_args(argv)
  import os
  from jaxseg.bench.train import prepare_train, time_steps
  size = tuple(int(v) for v in args.patch_size.split(",")) if args.patch_size else args.image_size
  names = args.variants.split(",")
  steps, infos = {}, {}
  for name in names:
    impl, policy, kind = variant(name)
    steps[name], infos[name] = prepare_train(args.model, batch_size=args.batch_size,
                                             image_size=size, step_kind=kind, conv_impl=impl,
                                             model_kw={"conv_policy": policy} if policy else None)
    time_steps(steps[name], 1)
    print(f"{name}: compiled in {infos[name]['compile_seconds']:.1f}s, "
          f"XLA {infos[name].get('xla_gflop_per_step', 0):.1f} GFLOP/step", file=sys.stderr)
  times = {n: [] for n in names}
  order = list(names)
  for _ in range(args.rounds):
    for n in order:
      times[n] += time_steps(steps[n], args.steps)
    order = order[1:] + order[:1]
  base = statistics.median(times[names[0]])
  shown = "x".join(map(str, size)) if isinstance(size, tuple) else f"{size}^2"
  print(f"{args.model}, batch {args.batch_size}, {shown}, load {os.getloadavg()[0]:.2f}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
  print("| variant | median step s | min s | vs first | XLA GFLOP/step |")
  print("|---|---|---|---|---|")
  for n in names:
    med = statistics.median(times[n])
    print(f"| {n} | {med:.4f} | {min(times[n]):.4f} | {med / base:.2f}x "
          f"| {infos[n].get('xla_gflop_per_step', 0):.1f} |")
  print(json.dumps({n: statistics.median(t) for n, t in times.items()}))


if __name__ == "__main__":
  main()
