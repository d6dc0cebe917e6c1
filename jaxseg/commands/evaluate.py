"""`jaxseg evaluate`: val loss, pixel accuracy and Dice of a trained run."""

from __future__ import annotations

import json

HELP = "evaluate a trained run on its validation data (or on --data)"


def add_arguments(parser):
  parser.add_argument("--workdir", required=True, help="the run directory written by `jaxseg train`")
  parser.add_argument("--data", default=None,
                      help="data spec to evaluate on (default: the run's own validation set; "
                           "a synthetic spec uses its val part, a file spec all of its images)")
  parser.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                      help="which checkpoint (default: latest, i.e. the train command's final numbers)")
  parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the run's)")
  parser.add_argument("--json", action="store_true", help="print the results as one JSON line on stdout")


def run(args):
  from jaxseg import data as data_lib
  from jaxseg import losses, models
  from jaxseg.errors import ConfigError
  from jaxseg.train import evaluate, loop
  config, model, params, meta = loop.restore_run(args.workdir, args.checkpoint)
  batch_size = args.batch_size if args.batch_size is not None else config.batch_size
  if batch_size < 1:
    raise ConfigError(f"--batch-size: must be an integer >= 1, got {batch_size}")
  if args.data is None:
    _, ds = data_lib.train_val(config.data, config.val_data, num_classes=config.num_classes,
                               val_fraction=config.val_fraction, seed=config.seed)
  else:
    everything, val = data_lib.load(args.data, num_classes=config.num_classes, seed=config.seed)
    ds = val if val is not None else everything
  if ds.images.shape[-1] != meta["in_channels"]:
    raise ConfigError(f"--data: {ds.images.shape[-1]} image channels, the model takes {meta['in_channels']}")
  fixed = tuple(meta["image_shape"][:2])
  if config.model == "dense" and tuple(ds.images.shape[1:3]) != fixed:
    raise ConfigError(f"--data: the dense model takes only {fixed[0]}x{fixed[1]} images, "
                      f"got {ds.images.shape[1]}x{ds.images.shape[2]}")
  ds = ds.padded_to(models.size_multiple(config.model))  # as in training
  result = evaluate(model, params, ds, batch_size=batch_size, loss_fn=losses.get(config.loss))
  result = {"model": config.model, "epoch": int(meta["epoch"]), "checkpoint": args.checkpoint,
            "data": args.data or config.data, **result}
  if args.json:
    print(json.dumps(result))
  else:
    print(f"val_dice {result['val_dice']:.4f}  val_loss {result['val_loss']:.4f}  "
          f"val_accuracy {result['val_accuracy']:.4f}  ({result['val_images']} images, "
          f"{config.model} after epoch {result['epoch']})")
  return 0
