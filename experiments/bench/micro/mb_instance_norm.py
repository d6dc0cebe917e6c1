"""Instance norm + leaky ReLU, forward and backward: JAX's derivative of the plain formula against
`jaxseg.models.layers.instance_norm`'s closed-form gradient, on unet3d_small's activations.

    .venv/bin/python experiments/bench/micro/mb_instance_norm.py [--rounds 3]

Prints the largest difference between the two gradients (relative to the largest entry) and the
median time of 15 calls of each, in turn, per round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import layers


def plain(x, scale, bias):
  axes = tuple(range(1, x.ndim - 1))
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


def grad_of(norm):
  def loss(x, scale, bias, g):
    return jnp.sum(jax.nn.leaky_relu(norm(x, scale, bias), 0.01) * g)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=3)
  args = ap.parse_args()
  r = np.random.default_rng(0)
  forms = {"autodiff": grad_of(plain), "closed form": grad_of(layers.instance_norm)}
  for shape in [(2, 32, 64, 64, 16), (2, 16, 32, 32, 32), (2, 8, 16, 16, 64)]:
    x = jnp.asarray(r.normal(0.5, 2, size=shape).astype(np.float32))
    scale = jnp.asarray(r.normal(1, 0.5, size=shape[-1]).astype(np.float32))
    bias = jnp.asarray(r.normal(0, 1, size=shape[-1]).astype(np.float32))
    g = jnp.asarray(r.standard_normal(shape).astype(np.float32))
    a, b = (f(x, scale, bias, g) for f in forms.values())
    diff = [float(jnp.max(jnp.abs(p - q)) / jnp.max(jnp.abs(p))) for p, q in zip(a, b)]
    print(f"{shape}: largest difference dx {diff[0]:.1e}, dscale {diff[1]:.1e}, dbias {diff[2]:.1e}")
    for _ in range(args.rounds):
      times = {}
      for name, f in forms.items():
        jax.block_until_ready(f(x, scale, bias, g))
        t = []
        for _ in range(15):
          t0 = time.perf_counter()
          jax.block_until_ready(f(x, scale, bias, g))
          t.append(time.perf_counter() - t0)
        times[name] = statistics.median(t) * 1e3
      print(f"  {shape}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in times.items()))


if __name__ == "__main__":
  main()
