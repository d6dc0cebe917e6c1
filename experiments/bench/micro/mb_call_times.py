"""Back-to-back calls of one 3-D layer's forward and weight-gradient kernels: every call's time.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python experiments/bench/micro/mb_call_times.py [--layers 4,7] [--calls 40]

Shows the two modes of a short isolated call (both threads, or the calling
thread alone while XLA's pool thread wakes up). The layers are the issue-19
table's (`mb_conv3d.LAYERS`), batch 2, 3x3x3 SAME.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from mb_conv3d import LAYERS


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--layers", default="4,7", help="indices into LAYERS, comma-separated")
  p.add_argument("--calls", type=int, default=40)
  args = p.parse_args(argv)
  from jaxseg.ops._common import conv_geometry
  from jaxseg.ops.cpu import direct
  for i in map(int, args.layers.split(",")):
    d, h, w_, ci, co = LAYERS[i]
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((2, d, h, w_, ci)).astype(np.float32))
    g = jnp.asarray(r.standard_normal((2, d, h, w_, co)).astype(np.float32))
    w = jnp.asarray(r.standard_normal((3, 3, 3, ci, co)).astype(np.float32))
    geo = conv_geometry(x.shape, w.shape, stride=1, padding="SAME", dilation=1, groups=1)
    for name, f in (("dw", jax.jit(lambda x, g: direct.weight_grad(x, g, geo))),
                    ("fwd", jax.jit(lambda x, g: direct.forward(x, w, geo)))):
      f(x, g).block_until_ready()
      ts = []
      for _ in range(args.calls):
        t0 = time.perf_counter()
        f(x, g).block_until_ready()
        ts.append((time.perf_counter() - t0) * 1e3)
      print(f"{d},{h},{w_},{ci},{co} {name} ms: " + " ".join(f"{t:.2f}" for t in ts), flush=True)


if __name__ == "__main__":
  main()
