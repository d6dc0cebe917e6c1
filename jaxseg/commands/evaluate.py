"""`jaxseg evaluate`: val loss, pixel accuracy and Dice of a trained run; per case with --per-case."""

from __future__ import annotations

import json
import os

import numpy as np

HELP = "evaluate a trained run on its validation data (or on --data)"


def add_arguments(parser):
  parser.add_argument("--workdir", required=True, help="the run directory written by `jaxseg train`")
  parser.add_argument("--data", default=None,
                      help="data spec to evaluate on (default: the run's own validation set; "
                           "a synthetic spec uses its val part, a file spec all of its images)")
  parser.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                      help="which checkpoint (default: latest, i.e. the train command's final numbers)")
  parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the run's)")
  parser.add_argument("--per-case", action="store_true",
                      help="also score every case (file or volume) as a whole in its own spacing: Dice "
                           "and HD95 in mm per foreground class (a 2-D model's slices are stacked back "
                           "into the volume). Both masks empty: Dice 1, HD95 0; one empty: Dice 0, HD95 "
                           "undefined (null, left out of the means). Prints a table and writes "
                           "per_case.csv in --workdir")
  parser.add_argument("--overlap", type=float, default=None,
                      help="3-D runs and runs trained on patches: the sliding windows' overlap, a fraction "
                           "of the window in [0, 1) (default: the run's --overlap, as training validated)")
  parser.add_argument("--mirror", action="store_true",
                      help="3-D runs and runs trained on patches: test-time mirroring (average over every "
                           "flip of the spatial axes)")
  parser.add_argument("--json", action="store_true", help="print the results as one JSON line on stdout")


def run(args):
  from jaxseg import data as data_lib
  from jaxseg import losses, models
  from jaxseg.errors import ConfigError
  from jaxseg.train import evaluate, loop
  config, model, params, meta = loop.restore_run(args.workdir, args.checkpoint)
  # exactly the normalisation training used (with its fitted statistics)
  norm = data_lib.Normalization.from_dict(meta.get("normalization"))
  batch_size = args.batch_size if args.batch_size is not None else config.batch_size
  if batch_size < 1:
    raise ConfigError(f"--batch-size: must be an integer >= 1, got {batch_size}")
  if args.overlap is None:
    args.overlap = config.overlap
  if not 0 <= args.overlap < 1:
    raise ConfigError(f"--overlap: must be in [0, 1), got {args.overlap}")
  nd = models.spatial_dims(config.model)
  if meta.get("patch_size") or nd == 3:
    result, cases = _evaluate_cases(model, params, meta, config, args, norm, batch_size)
  else:
    if args.data is None:
      _, ds = data_lib.train_val(config.data, config.val_data, num_classes=config.num_classes,
                                 val_fraction=config.val_fraction, seed=config.seed, normalize=norm,
                                 spacing=config.spacing)
    else:
      everything, val = data_lib.load(args.data, num_classes=config.num_classes, seed=config.seed,
                                      normalize=norm, spacing=config.spacing)
      ds = val if val is not None else everything
    if ds.images.shape[-1] != meta["in_channels"]:
      raise ConfigError(f"--data: {ds.images.shape[-1]} image channels, the model takes {meta['in_channels']}")
    fixed = tuple(meta["image_shape"][:2])
    if config.model == "dense" and tuple(ds.images.shape[1:3]) != fixed:
      raise ConfigError(f"--data: the dense model takes only {fixed[0]}x{fixed[1]} images, "
                        f"got {ds.images.shape[1]}x{ds.images.shape[2]}")
    ds = ds.padded_to(models.size_multiple(config.model))  # as in training
    result = evaluate(model, params, ds, batch_size=batch_size, loss_fn=losses.get(config.loss))
    cases = score_cases(model, params, ds, config, batch_size=batch_size) if args.per_case else None
  result = {"model": config.model, "epoch": int(meta["epoch"]), "checkpoint": args.checkpoint,
            "data": args.data or config.data, "normalization": norm.to_dict(), **result}
  table = None
  if args.per_case:
    from jaxseg import percase
    result |= {"cases": cases, **percase.summarize(cases)}
    csv_path = os.path.join(args.workdir, "per_case.csv")
    percase.write_csv(csv_path, cases)
    result["per_case_csv"] = csv_path
    table = percase.format_table(cases, percase.summarize(cases))
  if args.json:
    print(json.dumps(result))
  else:
    if table is not None:
      print(table)
      print(f"wrote {result['per_case_csv']}")
    count = f"{result['val_cases']} cases" if "val_cases" in result else f"{result['val_images']} images"
    print(f"val_dice {result['val_dice']:.4f}  val_loss {result['val_loss']:.4f}  "
          f"val_accuracy {result['val_accuracy']:.4f}  ({count}, "
          f"{config.model} after epoch {result['epoch']})")
  return 0


def _evaluate_cases(model, params, meta, config, args, norm, batch_size):
  """A 3-D or patch-trained run: the val metrics on whole cases by sliding windows, as training
  computed them (:mod:`jaxseg.train.casewise`), and with --per-case each case segmented as
  `predict` does (:mod:`jaxseg.segment`) and scored on its own grid."""
  from jaxseg import data as data_lib
  from jaxseg import losses, models, percase
  from jaxseg import segment as segment_lib
  from jaxseg.data import patches, preprocess
  from jaxseg.errors import ConfigError
  from jaxseg.train import casewise, inputs
  nd = models.spatial_dims(config.model)
  window = segment_lib.run_window(meta, nd)
  windows = casewise.model_windows(model)(params)
  loss_fn = losses.get(config.loss)
  spacing = meta.get("spacing") or config.spacing
  if nd == 3:
    if args.data is None:
      _, refs, _, _ = data_lib.train_val_refs(config.data, config.val_data, num_classes=config.num_classes,
                                              val_fraction=config.val_fraction, seed=config.seed)
    else:
      if data_lib.spec_dims(args.data) == 2:
        raise ConfigError(f"--data: model {config.model!r} is a 3-D model: it takes volumes, but "
                          f"{args.data!r} holds 2-D images")
      everything, val = data_lib.case_refs(args.data, num_classes=config.num_classes, seed=config.seed)
      refs = val if val is not None else everything
    prep = preprocess.Preprocessing(norm, spacing=None if spacing is None else tuple(spacing))
    check = inputs.check_volumes(config.model)
    raw_cases = []

    def cases():
      for ref, raw, done, _ in preprocess.stream(refs, prep, check=check):
        if done.image.shape[-1] != meta["in_channels"]:
          raise ConfigError(f"--data: {ref.name} has {done.image.shape[-1]} image channels, the model "
                            f"takes {meta['in_channels']}")
        if args.per_case:
          probs = segment_lib.probabilities(windows, raw.image, raw.spacing, spatial_dims=3, window=window,
                                            normalization=norm, target_spacing=spacing, batch_size=batch_size,
                                            overlap=args.overlap, mirror=args.mirror)
          raw_cases.append({"case": ref.name, **percase.case_scores(segment_lib.labels(probs), raw.label,
                                                                    raw.spacing, config.num_classes)})
        yield ref.name, done.image, done.label

    result = casewise.evaluate_cases(windows, cases(), window=window, loss_fn=loss_fn,
                                     num_classes=config.num_classes, batch_size=batch_size,
                                     overlap=args.overlap, mirror=args.mirror)
    return result, raw_cases if args.per_case else None
  # a 2-D model trained on patches: its slices, each whole, by sliding windows
  if args.data is None:
    _, ds = data_lib.train_val(config.data, config.val_data, num_classes=config.num_classes,
                               val_fraction=config.val_fraction, seed=config.seed, normalize=norm, spacing=spacing)
  else:
    everything, val = data_lib.load(args.data, num_classes=config.num_classes, seed=config.seed, normalize=norm,
                                    spacing=spacing)
    ds = val if val is not None else everything
  if ds.images.shape[-1] != meta["in_channels"]:
    raise ConfigError(f"--data: {ds.images.shape[-1]} image channels, the model takes {meta['in_channels']}")
  slices = patches.SliceCases(ds)
  result = casewise.evaluate_cases(windows, ((f"slice {i}", *slices.read(i)) for i in range(len(slices))),
                                   window=window, loss_fn=loss_fn, num_classes=config.num_classes,
                                   batch_size=batch_size, overlap=args.overlap, mirror=args.mirror)
  if not args.per_case:
    return result, None
  preds = np.zeros(ds.labels.shape, np.int32)
  for i in range(len(slices)):
    image, _ = slices.read(i)
    h, w = image.shape[:2]
    from jaxseg.inference import sliding_window
    preds[i, :h, :w] = casewise.hard_classes(sliding_window(
        windows, image[None], window=window, batch_size=batch_size, output="logits", overlap=args.overlap,
        mirror_axes=(0, 1) if args.mirror else ())[0])
  return result, _score_volumes(preds, ds, config)


def score_cases(model, params, ds, config, *, batch_size: int) -> list[dict]:
  """Predicts every slice, stacks each case's slices back (cropped to its own
  size) and scores it with :func:`jaxseg.percase.case_scores` in its spacing."""
  import jax
  from jaxseg.errors import ConfigError
  if not ds.volumes:
    raise ConfigError(f"--per-case: {ds.name} has no per-case records")
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False).argmax(-1))
  preds = np.concatenate([np.asarray(apply(params, ds.images[i:i + batch_size]))
                          for i in range(0, len(ds.images), batch_size)])
  if preds.shape != ds.labels.shape:
    raise ConfigError(f"--per-case: the {config.model} model's output {preds.shape[1:]} is smaller "
                      f"than its input {ds.labels.shape[1:]}; per-case scores need same-size outputs")
  return _score_volumes(preds, ds, config)


def _score_volumes(preds, ds, config) -> list[dict]:
  from jaxseg import percase
  from jaxseg.errors import ConfigError
  if not ds.volumes:
    raise ConfigError(f"--per-case: {ds.name} has no per-case records")
  out = []
  for v in ds.volumes:
    h, w = v.shape
    pred, truth = preds[v.start:v.stop, :h, :w], ds.labels[v.start:v.stop, :h, :w]
    if v.ndim == 2:
      pred, truth = pred[0], truth[0]
    out.append({"case": v.name, **percase.case_scores(pred, truth, v.spacing, config.num_classes)})
  return out
