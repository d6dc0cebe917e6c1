"""`jaxseg predict`: segment a 2-D image or a 3-D volume with a trained run, by sliding windows."""

from __future__ import annotations

HELP = "segment an image or volume with a trained run; the output keeps the input's geometry"


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
  """The sliding window of a run: its stored training patch size, else its training image size.

  Runs store ``image_shape`` (the training examples' shape, channels last);
  a run trained on patches stores ``patch_size``, which then wins.
  """
  window = meta.get("patch_size") or meta["image_shape"][:spatial_dims]
  return tuple(int(w) for w in window)


def segment(model, params, images, *, window, overlap: float = 0.5, batch_size: int = 8,
            mirror: bool = False):
  """(N, *spatial, C) normalised images -> int (N, *spatial) labels, by Gaussian-blended windows."""
  import jax
  import numpy as np
  from jaxseg import inference
  apply = jax.jit(lambda x: model.apply({"params": params}, x, train=False))
  nd = images.ndim - 2
  probs = inference.sliding_window(apply, images, window=window, overlap=overlap,
                                   batch_size=batch_size, mirror_axes=tuple(range(nd)) if mirror else ())
  if probs.shape[-1] == 1:
    return (probs[..., 0] > 0.5).astype(np.int32)
  return probs.argmax(-1).astype(np.int32)


def _images(array, geometry, *, spatial_dims: int, normalization, channels: bool, path):
  """The input as normalised (N, *spatial, C) model inputs: one case normalised as training did
  (`normalization`: the run's stored scheme and statistics), then 2-D slices or one volume."""
  from jaxseg import data as data_lib
  from jaxseg.errors import DataError
  if spatial_dims == 3 and len(geometry.size) != 3:
    raise DataError(f"{path}: a 2-D image, but the run's model is a 3-D model: it segments volumes")
  images = data_lib.image_to_slices(array, normalization=normalization, channels=channels, path=path)
  return images if spatial_dims == 2 else images[None]


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
  if not 0 <= args.overlap < 1:
    raise ConfigError(f"--overlap: must be in [0, 1), got {args.overlap}")
  if not os.path.exists(args.input):
    raise DataError(f"{args.input}: no such file")
  config, model, params, meta = loop.restore_run(args.workdir, args.checkpoint)
  array, geometry = data_lib.read_image(args.input)
  channels = array.ndim == len(geometry.size) + 1
  nd = models.spatial_dims(config.model)
  images = _images(array, geometry, spatial_dims=nd, channels=channels, path=args.input,
                   normalization=meta.get("normalization"))
  if images.shape[-1] != meta["in_channels"]:
    raise DataError(f"{args.input}: {images.shape[-1]} channels, the model takes {meta['in_channels']}")
  window = inference_window(meta, nd)
  labels = segment(model, params, images, window=window, overlap=args.overlap,
                   batch_size=args.batch_size, mirror=args.mirror).astype(np.uint8)
  if nd == 3 or len(geometry.size) == 2:
    labels = labels[0]
  data_lib.write_image(args.output, labels, geometry)
  summary = {"output": args.output, "shape": list(labels.shape),
             "slices" if nd == 2 else "volumes": int(len(images)), "window": list(window),
             "overlap": args.overlap, "mirror": args.mirror,
             "foreground_pixels": int((labels > 0).sum()), "model": config.model, "epoch": int(meta["epoch"])}
  if args.json:
    print(json.dumps(summary))
  else:
    print(f"wrote {args.output}: {summary['shape']} labels, {summary['foreground_pixels']} foreground "
          f"pixels ({'x'.join(map(str, window))} windows, overlap {args.overlap})")
  return 0
