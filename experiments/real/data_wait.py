"""Does the train step wait on the data? Seconds per epoch, MNI slabs, unet_small.

1. `produce`: one epoch of batches (15 of 4 slices, 240x208) made in this
   process with nothing else running, per augmentation preset: what a loader
   without prefetching would add to every epoch;
2. `wait`: `jaxseg train --augment heavy` for 3 epochs with --data-workers 0
   (Grain's prefetch thread) and 2 (Grain worker processes): the seconds the
   loop spent blocked in `next(batch)` per epoch (median of the epochs after the
   first; the first includes the workers' start-up), and the epoch's seconds.

    python experiments/real/data_wait.py --data /tmp/mni --runs /tmp/mni_runs > experiments/real/out/data_wait.json
"""

import argparse
import json
import os
import subprocess
import sys
import time


def produce(data_dir: str) -> dict:
  from jaxseg import data
  from jaxseg.data import pipeline
  train, _ = data.train_val(f"folder:{data_dir}/train", f"folder:{data_dir}/val")
  train = train.padded_to(16)
  steps = len(train) // 4
  out = {}
  for preset in ("none", "light", "default", "heavy"):
    batches = pipeline.training_batches(train.images, train.labels, batch_size=4, steps_per_epoch=steps,
                                        epochs=1, seed=0, augment=preset)
    t = time.perf_counter()
    for k in range(steps):
      batches[k]
    out[preset] = time.perf_counter() - t
  return {"steps_per_epoch": steps, "seconds_per_epoch": out}


def wait(data_dir: str, runs: str, workers: int) -> dict:
  cmd = [sys.executable, "-m", "jaxseg", "train", "--model", "unet_small", "--data", f"folder:{data_dir}/train",
         "--val-data", f"folder:{data_dir}/val", "--epochs", "3", "--augment", "heavy", "--data-workers",
         str(workers), "--workdir", os.path.join(runs, f"wait_w{workers}"), "--overwrite", "--json", "--quiet"]
  r = subprocess.run(cmd, capture_output=True, text=True, check=True)
  rows = [json.loads(l) for l in open(os.path.join(runs, f"wait_w{workers}", "metrics.jsonl"))]
  return {"command": " ".join(cmd[2:]), "data_wait_seconds": [r["data_wait_seconds"] for r in rows],
          "train_seconds": [r["train_seconds"] for r in rows]}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default="/tmp/mni")
  ap.add_argument("--runs", default="/tmp/mni_runs")
  args = ap.parse_args()
  result = {"uptime_before": os.popen("uptime").read().strip(), "produce": produce(args.data)}
  for w in (0, 2):
    result[f"workers_{w}"] = wait(args.data, args.runs, w)
  result["uptime_after"] = os.popen("uptime").read().strip()
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
