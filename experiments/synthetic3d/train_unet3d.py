"""Does unet3d_small learn the 3-D phantom on this CPU? Val Dice per epoch, on whole volumes.

Until `jaxseg train` loads volumes for 3-D models (issue 18's data path, on
top of issue 17's case-based data), this script trains with the library's own
train step (`jaxseg.train.step.make_train_step`, `jaxseg.train.state`) on
`jaxseg.data.synthetic3d` volumes: each volume z-scored over all its voxels,
shuffled per epoch from (seed, epoch), no augmentation, Adam with a constant
learning rate. Validation runs `jaxseg.inference.sliding_window` with one
window of the volume's size (the training size) and reports the lab's hard
Dice per volume (`jaxseg.metrics.dice_coef` on a batch of one volume), averaged.

Run (from the repository root; about 10 minutes on 2 cores):

    PYTHONPATH=$PWD .venv/bin/python experiments/synthetic3d/train_unet3d.py \
        --minutes 10 --out experiments/synthetic3d/out/unet3d_small.jsonl

One JSON line per epoch goes to --out (the last line: the settings and the
best epoch); the same figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--train", type=int, default=48, help="training volumes")
  p.add_argument("--val", type=int, default=8, help="validation volumes")
  p.add_argument("--size", type=int, default=64, help="in-plane size (16 slices deep)")
  p.add_argument("--base", type=int, default=16)
  p.add_argument("--depth", type=int, default=3)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--loss", default="ce+dice")
  p.add_argument("--batch-size", type=int, default=2)
  p.add_argument("--epochs", type=int, default=100, help="upper bound; --minutes stops earlier")
  p.add_argument("--minutes", type=float, default=10.0, help="stop after the epoch that passes this")
  p.add_argument("--conv-impl", default="lax")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None, help="JSON lines, one per epoch")
  args = p.parse_args()

  import jax
  import jax.numpy as jnp
  import optax

  from jaxseg import losses, metrics, models
  from jaxseg.data import synthetic3d
  from jaxseg.inference import sliding_window
  from jaxseg.train.state import create_train_state
  from jaxseg.train.step import make_train_step

  t_start = time.perf_counter()

  def zscore(v):
    m, s = v.mean(axis=(1, 2, 3), keepdims=True), v.std(axis=(1, 2, 3), keepdims=True)
    return ((v - m) / np.maximum(s, 1e-6))[..., None].astype(np.float32)

  xt, yt, spacing = synthetic3d.generate(args.train, size=args.size, seed=args.seed, split="train")
  xv, yv, _ = synthetic3d.generate(args.val, size=args.size, seed=args.seed, split="val")
  xt, xv = zscore(xt), zscore(xv)
  print(f"data: {args.train} train / {args.val} val volumes {xt.shape[1:4]}, spacing {spacing} mm, "
        f"LV {yt.mean():.4f} of voxels; {time.perf_counter() - t_start:.1f} s", flush=True)

  model = models.create("unet3d_small", base=args.base, depth=args.depth, conv_impl=args.conv_impl)
  tx = optax.adam(args.lr)
  loss_fn = losses.get(args.loss)
  init_key, train_key = jax.random.split(jax.random.key(args.seed))
  state = create_train_state(model, tx, init_key, xt)
  stepper = make_train_step(model, loss_fn, tx, devices=1)
  apply = jax.jit(lambda params, x: model.apply({"params": params}, x))

  def val_dice(params):
    dices = []
    for i in range(len(xv)):
      logits = sliding_window(lambda w: apply(params, w), xv[i:i + 1], window=xv.shape[1:4],
                              overlap=0.5, batch_size=1, output="logits")
      dices.append(float(metrics.dice_coef(jnp.asarray(logits), jnp.asarray(yv[i:i + 1]))))
    return float(np.mean(dices)), dices

  out = open(args.out, "w") if args.out else None
  steps_per_epoch = len(xt) // args.batch_size
  t_train = time.perf_counter()
  best = (-1.0, 0)
  for epoch in range(1, args.epochs + 1):
    t0 = time.perf_counter()
    order = np.random.default_rng([args.seed, epoch]).permutation(len(xt))
    losses_ = []
    for b in range(steps_per_epoch):
      idx = np.sort(order[b * args.batch_size:(b + 1) * args.batch_size])
      state, m = stepper(state, xt[idx], yt[idx], train_key)
      losses_.append(float(m["loss"]))
    train_s = time.perf_counter() - t0
    dice, per_volume = val_dice(state.params)
    if dice > best[0]:
      best = (dice, epoch)
    elapsed = time.perf_counter() - t_train
    row = {"epoch": epoch, "train_loss": float(np.mean(losses_)), "val_dice": dice,
           "val_dice_min": min(per_volume), "epoch_seconds": time.perf_counter() - t0,
           "train_seconds": train_s, "elapsed_seconds": elapsed, "load_avg": os.getloadavg()[0]}
    print(f"epoch {epoch}  loss {row['train_loss']:.4f}  val_dice {dice:.4f} "
          f"(min {row['val_dice_min']:.3f})  {row['epoch_seconds']:.0f} s, "
          f"{elapsed / 60:.1f} min, load {row['load_avg']:.1f}", flush=True)
    if out:
      out.write(json.dumps(row) + "\n")
      out.flush()
    if elapsed > args.minutes * 60:
      break
  summary = {"settings": vars(args), "best_val_dice": best[0], "best_epoch": best[1],
             "spacing": spacing, "jax": jax.__version__}
  print(json.dumps(summary))
  if out:
    out.write(json.dumps(summary) + "\n")
    out.close()


if __name__ == "__main__":
  main()
