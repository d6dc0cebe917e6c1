"""The C++ direct conv kernels (`jaxseg.ops.cpu.direct`) vs XLA's conv, layer by layer.

Forward, input gradient and weight gradient separately (random cotangent), the
U-Net's and the FCN's stride-1 layers at batch 8, 256^2; median of --steps calls,
the two impls alternated. usage: mb_cpu_conv.py [--steps 7] [--layers enc1b,dec1a] [--batch 8]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg.ops.cpu import available
from jaxseg.ops.cpu import direct

# name: (H, W, Cin, Cout, k), batch 8
LAYERS = {
    "enc1a": (256, 256, 1, 16, 3), "enc1b": (256, 256, 16, 16, 3), "enc2a": (128, 128, 16, 32, 3),
    "enc2b": (128, 128, 32, 32, 3), "enc3a": (64, 64, 32, 64, 3), "enc3b": (64, 64, 64, 64, 3),
    "enc4b": (32, 32, 128, 128, 3), "dec3a": (64, 64, 128, 64, 3), "dec2a": (128, 128, 64, 32, 3),
    "dec1a": (256, 256, 32, 16, 3), "fcn_conv1": (256, 256, 1, 100, 5, 2),
    "fcn_conv2": (64, 64, 100, 200, 5, 2), "fcn_conv3": (16, 16, 200, 300, 3),
    "fcn_conv4": (16, 16, 300, 300, 3),
}


def xla_conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def cpu(x, w, stride):
  return direct.conv(x, w, stride=stride)


def fns(conv):
  fwd = jax.jit(conv, static_argnums=2)
  dx = jax.jit(lambda x, w, g, s: jax.vjp(lambda x: conv(x, w, s), x)[1](g)[0], static_argnums=3)
  dw = jax.jit(lambda x, w, g, s: jax.vjp(lambda w: conv(x, w, s), w)[1](g)[0], static_argnums=3)
  return {"fwd": lambda x, w, g, s: fwd(x, w, s), "dx": dx, "dw": dw}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=7)
  p.add_argument("--layers", default=",".join(LAYERS))
  p.add_argument("--batch", type=int, default=8)
  a = p.parse_args()
  assert available(), "kernels not available"
  impls = {"xla": fns(xla_conv), "cpu": fns(cpu)}
  print("| layer | shape | part | XLA ms | cpu ms | cpu/XLA | cpu GFLOP/s | max rel err |")
  print("|---|---|---|---|---|---|---|---|")
  for name in a.layers.split(","):
    h, w_, ci, co, k, *st = LAYERS[name]
    s = st[0] if st else 1
    oh, ow = -(-h // s), -(-w_ // s)
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((a.batch, h, w_, ci)), jnp.float32)
    w = jnp.asarray(r.standard_normal((k, k, ci, co)) / np.sqrt(k * k * ci), jnp.float32)
    g = jnp.asarray(r.standard_normal((a.batch, oh, ow, co)), jnp.float32)
    flop = 2 * a.batch * oh * ow * ci * co * k * k
    for part in ("fwd", "dx", "dw"):
      if part == "dx" and s > 1:
        continue
      outs, times = {}, {i: [] for i in impls}
      for i, f in impls.items():
        outs[i] = f[part](x, w, g, s).block_until_ready()
      for _ in range(a.steps):
        for i, f in impls.items():
          t = time.perf_counter(); f[part](x, w, g, s).block_until_ready(); times[i].append(time.perf_counter() - t)
      tx, tc = (np.median(times[i]) * 1e3 for i in ("xla", "cpu"))
      ref = np.asarray(outs["xla"]); err = np.max(np.abs(np.asarray(outs["cpu"]) - ref)) / np.max(np.abs(ref))
      print(f"| {name} | {h}x{w_}x{ci}->{co} {k}x{k}/{s} | {part} | {tx:.2f} | {tc:.2f} | {tc / tx:.2f}x | "
            f"{flop / tc / 1e6:.0f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
  main()
