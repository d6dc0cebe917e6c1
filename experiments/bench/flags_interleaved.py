"""XLA flag sets compared fairly: one jaxseg worker process per flag set, blocks of steps in turn.

    .venv/bin/python experiments/bench/flags_interleaved.py --model fcn --rounds 6 --steps 5 -- \
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution" \
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot"

XLA reads its flags once per process, so flag sets cannot be variants inside one
process (`step_variants.py`); separate runs one after the other see different
machine load. Here each flag set gets its own worker of `jaxseg.bench.peers`
(the --peers harness), all alive at once, and the parent asks them in turn
for a block of steps, rotating the order each round: ratios per round show the
spread. GLIBC_TUNABLES (huge pages) is set as the jaxseg command sets it.
"""

from __future__ import annotations

import argparse
import os
import statistics


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="fcn")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--rounds", type=int, default=6)
  p.add_argument("flagsets", nargs="+", help="XLA_FLAGS values, one per worker")
  args = p.parse_args(argv)
  from jaxseg.bench.peers import _Worker
  os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  workers = []
  try:
    for f in args.flagsets:
      os.environ["XLA_FLAGS"] = f
      w = _Worker("jaxseg", args.model, args.batch_size, args.image_size, 1, {})
      w.read("ready")
      workers.append(w)
    times = [[] for _ in workers]
    per_round = []
    order = list(range(len(workers)))
    for _ in range(args.rounds):
      block = {}
      for i in order:
        workers[i].send(f"run {args.steps}")
        block[i] = workers[i].read("times")
        times[i] += block[i]
      per_round.append([statistics.median(block[i]) for i in range(len(workers))])
      order = order[1:] + order[:1]
  finally:
    for w in workers:
      w.close()
  base = statistics.median(times[0])
  print(f"{args.model}, batch {args.batch_size}, {args.image_size}^2, {args.rounds} rounds x {args.steps} steps, "
        f"load {os.getloadavg()[0]:.2f}")
  print("| XLA_FLAGS | median step s | min s | vs first | per round vs first |")
  print("|---|---|---|---|---|")
  for i, f in enumerate(args.flagsets):
    med = statistics.median(times[i])
    rounds = " ".join(f"{r[i] / r[0]:.2f}" for r in per_round)
    print(f"| `{f}` | {med:.4f} | {min(times[i]):.4f} | {med / base:.2f}x | {rounds} |")


if __name__ == "__main__":
  main()
