"""`jaxseg predict`: segment a 2-D image or a 3-D volume with a trained run, by sliding windows."""

from __future__ import annotations

HELP = ("segment an image or volume with a trained run; the output keeps the input's geometry (a run "
        "trained with --spacing resamples the input to it and the probabilities back)")


def add_arguments(parser):
  parser.add_argument("--workdir", required=True, help="the run directory written by `jaxseg train`")
  parser.add_argument("input", help="image or volume, any SimpleITK format (a 2-D model segments a "
                                    "volume slice by slice along the first array axis, a 3-D model "
                                    "the whole volume)")
  parser.add_argument("output", help="label image to write (same size, spacing, origin, direction)")
  parser.add_argument("--checkpoint", choices=("latest", "best"), default="best",
                      help="which checkpoint (default: best by val Dice)")
  parser.add_argument("--overlap", type=float, default=0.5,
                      help="fraction of a window shared by neighbouring windows, in [0, 1) "
                           "(default: 0.5); windows have the training size and are blended "
                           "with Gaussian weights")
  parser.add_argument("--mirror", action="store_true",
                      help="test-time mirroring: average the predictions of every flip of the "
                           "spatial axes (2^2 or 2^3 passes)")
  parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
  parser.add_argument("--json", action="store_true", help="print a JSON summary line on stdout")


def inference_window(meta: dict, spatial_dims: int) -> tuple[int, ...]:
  """The sliding window of a run (:func:`jaxseg.segment.run_window`)."""
  from jaxseg.segment import run_window
  return run_window(meta, spatial_dims)


def run(args):
  import json
  import os

  import numpy as np

  from jaxseg import data as data_lib
  from jaxseg import models
  from jaxseg import segment as segment_lib
  from jaxseg.data import validate
  from jaxseg.errors import ConfigError, DataError
  from jaxseg.train import loop
  if args.batch_size < 1:
    raise ConfigError(f"--batch-size: must be an integer >= 1, got {args.batch_size}")
  if not 0 <= args.overlap < 1:
    raise ConfigError(f"--overlap: must be in [0, 1), got {args.overlap}")
  if not os.path.exists(args.input):
    raise DataError(f"{args.input}: no such file")
  config, model, params, meta = loop.restore_run(args.workdir, args.checkpoint)
  array, geometry = data_lib.read_image(args.input)
  channels = array.ndim == len(geometry.size) + 1
  nd = models.spatial_dims(config.model)
  if nd == 3 and len(geometry.size) != 3:
    raise DataError(f"{args.input}: a 2-D image, but the run's model {config.model!r} is a 3-D model: "
                    f"it segments volumes")
  image = validate.case_image(array, args.input, channels=channels)
  if image.shape[-1] != meta["in_channels"]:
    raise DataError(f"{args.input}: {image.shape[-1]} channels, the model takes {meta['in_channels']}")
  window = inference_window(meta, nd)
  spacing = tuple(float(s) for s in reversed(geometry.spacing))[-(image.ndim - 1):]
  probs = segment_lib.probabilities(
      segment_lib.forward(model, params), image, spacing, spatial_dims=nd, window=window,
      normalization=data_lib.Normalization.from_dict(meta.get("normalization")),
      target_spacing=meta.get("spacing") or config.spacing, overlap=args.overlap,
      batch_size=args.batch_size, mirror=args.mirror)
  labels = segment_lib.labels(probs).astype(np.uint8)
  data_lib.write_image(args.output, labels, geometry)
  summary = {"output": args.output, "shape": list(labels.shape),
             "slices" if nd == 2 else "volumes": int(labels.shape[0]) if nd == 2 and labels.ndim == 3 else 1,
             "window": list(window), "overlap": args.overlap, "mirror": args.mirror,
             "spacing": meta.get("spacing") or (list(config.spacing) if config.spacing else None),
             "foreground_pixels": int((labels > 0).sum()), "model": config.model, "epoch": int(meta["epoch"])}
  if args.json:
    print(json.dumps(summary))
  else:
    print(f"wrote {args.output}: {summary['shape']} labels, {summary['foreground_pixels']} foreground "
          f"pixels ({'x'.join(map(str, window))} windows, overlap {args.overlap})")
  return 0
