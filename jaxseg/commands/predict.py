"""`jaxseg predict`: segment a 2-D image or a 3-D volume (slice by slice) with a trained run."""

from __future__ import annotations

HELP = "segment an image or volume with a trained run; the output keeps the input's geometry"


def add_arguments(parser):
  parser.add_argument("--workdir", required=True, help="the run directory written by `jaxseg train`")
  parser.add_argument("input", help="image or volume, any SimpleITK format (3-D: segmented slice by slice "
                                    "along the first array axis)")
  parser.add_argument("output", help="label image to write (same size, spacing, origin, direction)")
  parser.add_argument("--checkpoint", choices=("latest", "best"), default="best",
                      help="which checkpoint (default: best by val Dice)")
  parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
  parser.add_argument("--json", action="store_true", help="print a JSON summary line on stdout")


def predict_slices(model, params, slices, *, multiple: int, batch_size: int = 8):
  """(N, H, W, C) normalised slices -> int (N, H, W) labels; pads to `multiple`, crops back."""
  import jax
  import numpy as np
  from jaxseg import data as data_lib
  padded, hw = data_lib.pad_to_multiple(slices, multiple)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False).argmax(-1))
  out = [np.asarray(apply(params, padded[i:i + batch_size])) for i in range(0, len(padded), batch_size)]
  return data_lib.crop_to(np.concatenate(out), hw)


def run(args):
  import json
  import os

  import numpy as np

  from jaxseg import data as data_lib
  from jaxseg import models
  from jaxseg.errors import ConfigError, DataError
  from jaxseg.train import loop
  if args.batch_size < 1:
    raise ConfigError(f"--batch-size: must be an integer >= 1, got {args.batch_size}")
  if not os.path.exists(args.input):
    raise DataError(f"{args.input}: no such file")
  config, model, params, meta = loop.restore_run(args.workdir, args.checkpoint)
  array, geometry = data_lib.read_image(args.input)
  channels = array.ndim == len(geometry.size) + 1
  slices = data_lib.image_to_slices(array, normalization=meta.get("normalization") or "zscore",
                                    channels=channels, path=args.input)
  if slices.shape[-1] != meta["in_channels"]:
    raise DataError(f"{args.input}: {slices.shape[-1]} channels, the model takes {meta['in_channels']}")
  multiple = models.size_multiple(config.model)
  fixed = tuple(meta["image_shape"][:2])
  if config.model == "dense" and tuple(slices.shape[1:3]) != fixed:
    raise DataError(f"{args.input}: the dense model takes only {fixed[0]}x{fixed[1]} images, "
                    f"got {slices.shape[1]}x{slices.shape[2]}")
  labels = predict_slices(model, params, slices, multiple=multiple, batch_size=args.batch_size)
  labels = labels.astype(np.uint8)
  if len(geometry.size) == 2 or (channels and array.ndim == 3):
    labels = labels[0]
  data_lib.write_image(args.output, labels, geometry)
  summary = {"output": args.output, "shape": list(labels.shape), "slices": int(len(slices)),
             "foreground_pixels": int((labels > 0).sum()), "model": config.model, "epoch": int(meta["epoch"])}
  if args.json:
    print(json.dumps(summary))
  else:
    print(f"wrote {args.output}: {summary['shape']} labels, {summary['foreground_pixels']} foreground pixels")
  return 0
