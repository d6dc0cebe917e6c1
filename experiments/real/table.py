"""Prints the markdown table of experiments/RESULTS.md "Real scans" from experiments/real/out/*.json."""

import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
ORDER = ("defaults", "defaults_rerun", "no_augment", "light_augment", "defaults_e10", "zscore_slice_e10", "zscore_volume_e10", "old_defaults_e10",
         "no_augment_e10", "light_augment_e10", "heavy_augment_e10", "constant_lr_e10", "poly_e10")


def main():
  base = json.load(open(os.path.join(OUT, "threshold.json")))
  print("| setting | flags after `--model unet_small ...` | val Dice (last) | best val Dice (epoch) "
        "| wall s | load after |")
  print("|---|---|---|---|---|---|")
  for name in ORDER:
    path = os.path.join(OUT, f"{name}.json")
    if not os.path.exists(path):
      continue
    r = json.load(open(path))
    load = r.get("uptime_after", "").rpartition("load average:")[2].split(",")[0].strip()
    print(f"| {name} | `{r.get('flags') or '(none)'}` | **{r['val_dice']:.4f}** | {r['best_val_dice']:.4f} "
          f"({r['best_epoch']}) | {r['wall_seconds']:.0f} | {load} |")
  for key, label in (("one_threshold", "one global threshold"), ("band", "two thresholds (band)")):
    b = base[key]
    print(f"| {label} | `{b['rule']}` chosen on the train slab (train Dice {b['train_dice']:.4f}) | "
          f"**{b['val_dice_slices']:.4f}** (volume {b['val_dice_volume']:.4f}) | - | - | - |")


if __name__ == "__main__":
  main()
