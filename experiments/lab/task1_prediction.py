"""What the Task 1 net (dense) predicts on the validation images.

  .venv/bin/python experiments/lab/task1_prediction.py [runs/lab/task1]

Restores the latest checkpoint of a `run.py task1` run and prints how many
pixels it calls LV per image, how many distinct pixels that is over all
images, its pixel accuracy against the all-background one, its hard Dice, and
the range of the model's outputs (probabilities of the softmax over all
outputs, each ~1 / (256*256*2)).
"""

import sys

import numpy as np


def main(workdir="runs/lab/task1"):
  from jaxseg import data
  from jaxseg.data import synthetic
  from jaxseg.train.loop import restore_run
  config, model, params, _ = restore_run(workdir, "latest")
  _, val = data.load(config.data)  # the synthetic spec: (train, val)
  y = val.labels
  out = np.asarray(model.apply({"params": params}, val.images, train=False))
  pred = out.argmax(-1)
  npred, nlab = pred.sum(axis=(1, 2)), y.sum(axis=(1, 2))
  inter = (pred * y).sum(axis=(1, 2))
  print(f"{len(y)} val images; LV pixels per image: mean {nlab.mean():.1f}")
  print(f"predicted LV pixels per image: {npred.min()}-{npred.max()} (mean {npred.mean():.1f}); "
        f"distinct over all images: {int(pred.any(0).sum())}")
  print(f"overlap with the LV per image: {inter.min()}-{inter.max()} pixels")
  print(f"pixel accuracy {(pred == y).mean():.5f}; all-background accuracy {(y == 0).mean():.5f}")
  dice = (2 * inter + 1) / (npred + nlab + 1)
  print(f"hard Dice (smooth 1) per image: mean {dice.mean():.4f}, max {dice.max():.4f}")
  print(f"model outputs: min {out.min():.3g}, max {out.max():.3g}; 1/(H*W*C) = {1 / out[0].size:.3g}")
  _, train_labels = synthetic.generate(234, seed=0)
  freq = train_labels.mean(0)[pred.any(0)]
  print(f"train LV frequency at the predicted pixels: {freq.min():.3f}-{freq.max():.3f}")


if __name__ == "__main__":
  main(*sys.argv[1:])
