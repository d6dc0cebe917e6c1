"""`jaxseg train`: train a model, evaluate and checkpoint every epoch."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from jaxseg.registry import CONV_IMPLS

HELP = "train a segmentation model (default: the lab's FCN on synthetic cardiac MRI)"

# flag -> TrainConfig field; defaults live in TrainConfig (None here means "not given").
_FLAGS = {
    "model": ("--model", str, "model name (fcn, fcn_deep, cnn3, dense, unet_small, unet; 3-D: unet3d_small, unet3d)"),
    "data": ("--data", str, "data spec: synthetic[:TRAIN,VAL[,SIZE]], synthetic3d[:TRAIN,VAL[,SIZE]] (volumes), "
             "sunnybrook:PATH, acdc:PATH, atria:PATH, folder:PATH"),
    "val_data": ("--val-data", str, "validation data spec (default: hold out a fraction of the cases)"),
    "val_fraction": ("--val-fraction", float, "fraction of cases held out without --val-data"),
    "num_classes": ("--num-classes", int, "number of classes including background"),
    "epochs": ("--epochs", int, "number of epochs (the lab's num_epochs)"),
    "batch_size": ("--batch-size", int, "global batch size, split across --devices"),
    "lr": ("--lr", float, "initial learning rate (the lab's learning_rate)"),
    "schedule": ("--schedule", str, "learning-rate schedule after the warm-up: constant, exponential "
                 "(the lab's, see --decay-rate), poly (lr * (1 - t/T)**0.9, nnU-Net's) or cosine (to 0 at the end)"),
    "warmup_steps": ("--warmup-steps", int, "linear warm-up of the learning rate from 0 over this many steps"),
    "decay_rate": ("--decay-rate", float, "exponential schedule: lr *= decay_rate every --decay-steps steps (1.0: no decay)"),
    "decay_steps": ("--decay-steps", int, "exponential schedule: steps per decay_rate factor (continuous)"),
    "optimizer": ("--optimizer", str, "adam or sgd (momentum 0.9)"),
    "loss": ("--loss", str, "ce, wce, dice or ce+dice"),
    "conv_impl": ("--conv-impl", str, f"convolution implementation: {', '.join(CONV_IMPLS)} (auto: the fastest "
                  "tested route on this platform; lax: plain XLA)"),
    "normalize": ("--normalize", str, "intensity normalisation per case: zscore-foreground (nonzero voxels), "
                  "zscore-volume, zscore-slice, ct (train-set percentile clip + z-score), div1024, none"),
    "data_workers": ("--data-workers", int, "Grain worker processes preparing batches (0: a background thread)"),
    "patch_size": ("--patch-size", "patch", "train on patches of this size, D,H,W for a 3-D model or H,W for a "
                   "2-D one (multiples of the model's stride), a third of them centred on foreground, "
                   "patches_per_case per case and epoch; validation then segments whole cases by sliding windows "
                   "of this size (see --overlap)"),
    "spacing": ("--spacing", "spacing", "resample every case to this spacing in mm, Z,Y,X (a 2-D image takes Y,X; Y,X "
                "for volumes resamples in plane and keeps each case's slice spacing), "
                "with SimpleITK (linear for images, nearest for labels); predict resamples back"),
    "patches_per_case": ("--patches-per-case", int, "patches drawn from each training case per epoch "
                         "(with --patch-size, and for 3-D models)"),
    "overlap": ("--overlap", float, "validation of patch-trained and 3-D runs: the sliding windows' "
                "overlap, a fraction of the window in [0, 1)"),
    "seed": ("--seed", int, "seed of initialisation, data order, augmentation and dropout"),
    "devices": ("--devices", int, "data-parallel over this many devices (default 1; all in a multi-process run)"),
    "parallel": ("--parallel", str, "data-parallel layout with --devices > 1: pmap, shard_map or jit "
                 "(jax.jit over batch-sharded global arrays); each gives the one-device result"),
    "keep": ("--keep", int, "number of latest checkpoints kept (the best is kept besides)"),
    "coordinator": ("--coordinator", str, "HOST:PORT of process 0 for a multi-process run ('auto': Slurm/Open MPI detection)"),
    "num_processes": ("--num-processes", int, "number of processes of a multi-process run"),
    "process_id": ("--process-id", int, "index of this process in [0, num-processes)"),
}




def _default_text(field, defaults) -> str:
  from jaxseg.train import config as config_lib
  if field == "normalize":
    return ("div1024 for synthetic and sunnybrook, zscore-volume for synthetic3d, "
            "zscore-foreground for acdc, atria and folder")
  if field == "patch_size":
    return ("none for 2-D models (whole slices); for 3-D models the median case shape rounded up to the "
            "model's stride, at most 2^18 voxels")
  if field == "spacing":
    return "each case keeps its own"
  defaults_3d = config_lib.MODEL_DEFAULTS["unet3d_small"]
  if field in config_lib.DATA_DEFAULTS:
    return f"{config_lib.DATA_DEFAULTS[field]}; {defaults_3d[field]} for unet3d_small and unet3d"
  if field in config_lib.LAB_DEFAULTS:
    lab, unet = config_lib.LAB_DEFAULTS[field], config_lib.MODEL_DEFAULTS["unet_small"][field]
    return (f"{lab} for the lab's models (fcn, cnn3, ...), {unet} for unet_small and unet, "
            f"{defaults_3d[field]} for unet3d_small and unet3d")
  return str(getattr(defaults, field))


def _patch(text):
  import argparse
  from jaxseg.data.patches import parse_patch_size
  from jaxseg.errors import ConfigError
  try:
    return parse_patch_size(text)
  except ConfigError as e:
    raise argparse.ArgumentTypeError(str(e).removeprefix("--patch-size: ")) from None


def _spacing(text):
  import argparse
  from jaxseg.data.preprocess import parse_spacing
  from jaxseg.errors import ConfigError
  try:
    return parse_spacing(text)
  except ConfigError as e:
    raise argparse.ArgumentTypeError(str(e).removeprefix("--spacing: ")) from None


_TYPES = {"patch": _patch, "spacing": _spacing}


def add_arguments(parser):
  from jaxseg.train.config import TrainConfig
  defaults = TrainConfig()
  for field, (flag, typ, text) in _FLAGS.items():
    metavar = {"patch_size": "D,H,W|H,W", "spacing": "Z,Y,X"}.get(field)
    parser.add_argument(flag, type=_TYPES.get(typ, typ), default=None, dest=field, metavar=metavar,
                        help=f"{text} (default: {_default_text(field, defaults)})")
  parser.add_argument("--augment", nargs="?", const="default", default=None, metavar="PRESET",
                      help="augmentation of the training images, seeded by (seed, epoch, image): none; "
                           "light (mirroring, rotation up to 15 degrees, scaling 0.9-1.1); default "
                           "(nnU-Net's: rotation, scaling, mirroring, brightness, contrast, gamma, noise, blur); "
                           "heavy (more of each, and elastic deformation). --augment alone means default "
                           f"(default: {_default_text('augment', defaults)})")
  parser.add_argument("--workdir", default=None,
                      help="run directory for checkpoints, metrics, figures (default: runs/<model>-<UTC time>)")
  parser.add_argument("--resume", action="store_true",
                      help="continue the run in --workdir from its latest checkpoint (same settings; --epochs may grow)")
  parser.add_argument("--overwrite", action="store_true",
                      help="delete the run files in a non-empty --workdir and start afresh")
  parser.add_argument("--json", action="store_true",
                      help="print the results as one JSON line on stdout (per-epoch lines stay on stderr)")
  parser.add_argument("--quiet", action="store_true", help="no per-epoch lines and no progress bar on stderr")


def config_from_args(args, *, base=None):
  """TrainConfig from the flags given; on --resume, the stored run's config fills the rest."""
  from jaxseg.train.config import TrainConfig
  given = {f: getattr(args, f) for f in list(_FLAGS) + ["augment"] if getattr(args, f, None) is not None}
  base = base or TrainConfig()
  return dataclasses.replace(base, **given)


def default_workdir(model: str) -> str:
  return os.path.join("runs", f"{model}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")


def run(args):
  from jaxseg.errors import ConfigError, DivergenceError
  from jaxseg.train import loop
  config = config_from_args(args)
  if args.resume:
    if not args.workdir:
      raise ConfigError("--resume needs --workdir (the run to continue)")
    loop.check_workdir(args.workdir, resume=True, overwrite=args.overwrite)
    config = config_from_args(args, base=loop.load_stored_config(args.workdir))
  config.validate()
  workdir = args.workdir or default_workdir(config.model)
  try:
    # per-epoch lines go to stderr even with --json (stdout keeps only the JSON);
    # the progress bar only on a terminal and without --json
    result = loop.train_and_evaluate(config, workdir, resume=args.resume, overwrite=args.overwrite,
                                     quiet=args.quiet,
                                     show_progress=not (args.quiet or args.json) and sys.stderr.isatty())
  except DivergenceError as e:
    print(f"jaxseg train: error: {e}", file=sys.stderr)
    return 3
  if getattr(args, "process_id", None) not in (None, 0):
    return 0  # only process 0 reports
  if args.json:
    print(json.dumps(result))
  else:
    print(f"val_dice {result['val_dice']:.4f}  val_loss {result['val_loss']:.4f}  "
          f"val_accuracy {result['val_accuracy']:.4f}  (best val_dice {result['best_val_dice']:.4f} "
          f"at epoch {result['best_epoch']})  workdir {result['workdir']}")
  return 0
