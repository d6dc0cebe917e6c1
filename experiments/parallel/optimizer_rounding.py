"""How far 4 devices' parameters are from one device's after a few steps, Adam vs SGD.

unet_small (dropout on), CE + Dice, a batch of 8 16x16 images (3 without
foreground), the train step of `jaxseg train` on 1 device and on 4 (each
layout). The losses and gradients agree to float32 rounding (~1e-7); SGD
passes that on to the parameters, while Adam's first step lr * g / (|g| + eps)
is lr * sign(g) for every |g| >> 1e-8, so a gradient that is at the level of
its own rounding gets a step that rounding decides.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python experiments/parallel/optimizer_rounding.py \
      | tee experiments/parallel/out/optimizer_rounding.txt
"""

import jax
import numpy as np
import optax

from jaxseg import losses, models
from jaxseg.train import make_train_step
from jaxseg.train import state as state_lib


def batch(n=8, size=16, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, size, size, 1)).astype(np.float32)
  yy, xx = np.mgrid[:size, :size]
  labels = np.zeros((n, size, size), np.int32)
  for i in range(n):
    if i in (2, 3, 6):
      continue
    cy, cx, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(2, 5)
    labels[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    images[i, ..., 0] += 2.0 * labels[i]
  return images, labels


def main():
  images, labels = batch()
  model = models.create("unet_small")
  loss = losses.get("ce+dice")
  key = jax.random.PRNGKey(3)
  print(f"jax {jax.__version__}, {jax.device_count()} devices; unet_small, ce+dice, batch 8 of 16x16")
  for name, tx, steps in (("adam 1e-3", optax.adam(1e-3), 1), ("adam 1e-3", optax.adam(1e-3), 3),
                          ("sgd 0.01 momentum 0.9", optax.sgd(0.01, momentum=0.9), 3)):
    host = jax.device_get(state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), images))
    out = {}
    for devices, layout in ((1, "pmap"), (4, "pmap"), (4, "shard_map"), (4, "jit")):
      step = make_train_step(model, loss, tx, devices=devices, mode=layout)
      s = step.put_state(host)
      for i in range(steps):
        s, m = step(s, np.roll(images, i, 0), np.roll(labels, i, 0), key)
      out[(devices, layout)] = (step.get_state(s).params, float(m["loss"]))
    p1, l1 = out[(1, "pmap")]
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(host.params)))
    for (devices, layout), (p, l) in out.items():
      if devices == 1:
        continue
      diffs = sorted(((float(np.abs(a - b).max()), jax.tree_util.keystr(k)) for (k, a), b in zip(
          jax.tree_util.tree_leaves_with_path(p), jax.tree.leaves(p1))), reverse=True)
      print(f"{name}, {steps} step(s), 4 x {layout:9s}: params max |diff| {diffs[0][0]:.2e} "
            f"({diffs[0][1]}; largest move {moved:.2e}), last loss rel. diff {abs(l - l1) / l1:.1e}")


if __name__ == "__main__":
  main()
