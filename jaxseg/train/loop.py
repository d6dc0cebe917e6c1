"""`train_and_evaluate(config, workdir)`: the whole training run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from jaxseg.errors import ConfigError, DivergenceError, UserError
from jaxseg.train.config import TrainConfig, save_json

# What a run writes into its workdir (removed by overwrite=True).
RUN_FILES = ("checkpoints", "best", "tb", "figures", "metrics.jsonl", "metrics.csv",
             "config.json", "curves.png", "result.json")
# (The preprocessed cases of a 3-D run, `preprocessed/`, stay: their
# fingerprint decides whether a run can reuse them.)


def _is_nonempty_dir(path: str) -> bool:
  return os.path.isdir(path) and bool(os.listdir(path))


def check_workdir(workdir: str, *, resume: bool, overwrite: bool) -> None:
  """Refuses to reuse a finished run's workdir unless asked (before anything is written)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir: {workdir} exists and is not a directory")
  if resume and overwrite:
    raise ConfigError("--resume and --overwrite exclude each other")
  if resume:
    if not os.path.isdir(workdir):
      raise ConfigError(f"--resume: no run in {workdir} (no such directory)")
    if not os.path.exists(os.path.join(workdir, "config.json")):
      raise ConfigError(f"--resume: {workdir} holds no jaxseg run (no config.json)")
  elif _is_nonempty_dir(workdir) and not overwrite:
    raise ConfigError(f"--workdir: {workdir} is not empty; use --resume to continue that run, "
                      "--overwrite to replace it, or another --workdir")


def load_stored_config(workdir: str) -> TrainConfig:
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      return TrainConfig.from_dict(json.load(f))
  except (OSError, ValueError, TypeError) as e:
    raise ConfigError(f"{path}: cannot read the run's config ({e})") from None


def _log(msg: str, quiet: bool) -> None:
  if not quiet:
    print(msg, file=sys.stderr, flush=True)


def train_and_evaluate(config: TrainConfig, workdir: str, *, resume: bool = False,
                       overwrite: bool = False, quiet: bool = False,
                       show_progress: bool | None = None) -> dict:
  """Trains `config.model` on `config.data`, evaluating and checkpointing every epoch.

  Returns the last epoch's metrics (val_dice, val_loss, val_accuracy, train_*)
  plus best_val_dice/best_epoch, seconds_per_epoch and the workdir. With
  `resume=True` it continues from the latest checkpoint in `workdir` and ends
  with the same numbers as an uninterrupted run. Raises ConfigError/DataError
  before writing anything, and DivergenceError (with the step) when the loss
  stops being finite; the last good checkpoint stays in `workdir`.
  """
  config = config.validate().resolved()
  workdir = os.path.abspath(workdir)
  # Before jax.distributed.initialize: it waits for every process, so no
  # process has written anything yet when each one checks the workdir.
  check_workdir(workdir, resume=resume, overwrite=overwrite)
  if resume:
    config.check_resumable(load_stored_config(workdir), workdir)
  from jaxseg.train import distributed
  distributed.initialize(config.coordinator, config.num_processes, config.process_id)

  import jax
  import jax.numpy as jnp
  from jaxseg import losses
  from jaxseg.data import pipeline
  from jaxseg.train import checkpoint, logging as logs, state as state_lib, step as step_lib
  from jaxseg.train import inputs as inputs_lib

  primary = jax.process_index() == 0
  quiet = quiet or not primary
  devices = config.devices or (jax.device_count() if jax.process_count() > 1 else 1)
  if devices > jax.device_count():
    raise ConfigError(f"--devices: {devices} requested but only {jax.device_count()} available")
  if config.batch_size % devices:
    raise ConfigError(f"--batch-size: {config.batch_size} is not divisible by {devices} devices")

  # On the Pallas kernels the loss is the fused CE/Dice kernel too (no class weights, no wce).
  fused = config.conv_impl == "pallas" and config.loss != "wce"
  loss_fn = losses.get(config.loss, impl="pallas") if fused else losses.get(config.loss)
  # Whole slices (2-D models) or patches of cases (3-D models, --patch-size); see jaxseg.train.inputs.
  with _removed_on_error(workdir):
    inputs = inputs_lib.prepare(config, workdir, log=lambda m: _log(m, quiet),
                                process_index=jax.process_index(), process_count=jax.process_count())
    steps_per_epoch = inputs.steps_per_epoch
    in_channels = inputs.in_channels
    model = state_lib.make_model(config, in_channels)
    total_steps = config.epochs * steps_per_epoch
    tx = state_lib.make_optimizer(config, total_steps)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    host_state = jax.device_get(state_lib.create_train_state(model, tx, init_key, inputs.init_sample))
    stepper = step_lib.make_train_step(model, loss_fn, tx, devices=devices, mode=config.parallel)

  if overwrite and primary:
    for name in RUN_FILES:
      path = os.path.join(workdir, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  ckpts = checkpoint.Checkpoints(workdir, keep=config.keep)
  history: list[dict] = []
  best = (-math.inf, 0)
  start_epoch = 0
  data_position = 0
  if resume and ckpts.latest_epoch() is not None:
    with _damaged_checkpoint_is_user_error(workdir, "latest"):
      meta = ckpts.read_meta()
      config.check_resumable(TrainConfig.from_dict(meta["config"]), workdir)
      host_state, meta = ckpts.restore(host_state)
    start_epoch, history = int(meta["epoch"]), list(meta["history"])
    best = (float(meta["best_val_dice"]), int(meta["best_epoch"]))
    data_position = int(meta.get("data_iterator", {}).get("next_index", start_epoch * steps_per_epoch))
    _log(f"resuming {workdir} after epoch {start_epoch}", quiet)
  writer = logs.MetricsWriter(workdir, enabled=primary)
  if primary:
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    save_json(config, os.path.join(workdir, "config.json"))
    writer.rewrite(history)

  local = stepper.local_slice(config.batch_size)
  state = stepper.put_state(host_state)
  schedule = state_lib.make_schedule(config, total_steps)
  if show_progress is None:
    show_progress = not quiet and sys.stderr.isatty()
  meta_base = inputs.meta()
  # Every batch of the run, a function of (seed, epoch, position); the
  # checkpoint stores the iterator's position, from which a resumed run
  # rebuilds it (with any number of workers).
  batches = inputs.batches()
  batch_iter = pipeline.BatchIterator(batches, start_batch=data_position,
                                      options=pipeline.PipelineOptions(workers=config.data_workers))
  try:
    for epoch in range(start_epoch + 1, config.epochs + 1):
      t0 = time.perf_counter()
      waited = batch_iter.waited
      sums = {"loss": 0.0, "accuracy": 0.0, "dice": 0.0}
      bar = logs.progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", enabled=show_progress and primary)
      step_no = int(host_state.step)
      for images, labels in batch_iter.take(steps_per_epoch):
        step_no += 1
        state, m = stepper(state, np.asarray(images[local]), np.asarray(labels[local]), train_key)
        loss = float(m["loss"])
        if not math.isfinite(loss):
          raise DivergenceError(_diverged_msg(loss, step_no, epoch, workdir, ckpts))
        for k in sums:
          sums[k] += float(m[k]) if k != "loss" else loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
      bar.close()
      train_seconds = time.perf_counter() - t0
      data_wait = batch_iter.waited - waited
      host_state = stepper.get_state(state)
      val = inputs.validate(model, host_state.params, loss_fn)
      step_no = int(host_state.step)
      if not math.isfinite(val["val_loss"]):
        raise DivergenceError(_diverged_msg(val["val_loss"], step_no, epoch, workdir, ckpts, "val loss"))
      row = {"epoch": epoch, "step": step_no,
             **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
             "val_loss": val["val_loss"], "val_accuracy": val["val_accuracy"], "val_dice": val["val_dice"],
             "val_dice_per_class": val["val_dice_per_class"],
             "lr": float(schedule(step_no)), "train_seconds": train_seconds, "data_wait_seconds": data_wait}
      is_best = row["val_dice"] > best[0]
      if is_best:
        best = (row["val_dice"], epoch)
      row["epoch_seconds"] = time.perf_counter() - t0
      history.append(row)
      ckpts.save(epoch, host_state, {**meta_base, "epoch": epoch, "config": config.to_dict(),
                                     "history": history, "best_val_dice": best[0], "best_epoch": best[1],
                                     "rng": np.asarray(train_key).tolist(),
                                     "data_iterator": {"next_index": batch_iter.next_index}},
                 is_best=is_best)
      if primary:
        writer.write(row)
        inputs.figure(model, host_state.params, os.path.join(workdir, "figures", f"epoch_{epoch:03d}.png"),
                      writer, epoch)
      per_class = row["val_dice_per_class"]
      classes = ("  [" + " ".join(f"{k}:{v:.3f}" for k, v in per_class.items()) + "]") if len(per_class) > 1 else ""
      _log(f"epoch {epoch}/{config.epochs}  loss {row['train_loss']:.4f}  dice {row['train_dice']:.4f}  "
           f"val_loss {row['val_loss']:.4f}  val_accuracy {row['val_accuracy']:.4f}  "
           f"val_dice {row['val_dice']:.4f}{classes}  ({row['epoch_seconds']:.1f} s, "
           f"{data_wait:.1f} s waiting for data)", quiet)
  finally:
    batch_iter.close()
    writer.close()
    ckpts.close()
  if primary and history:
    logs.save_curves_png(os.path.join(workdir, "curves.png"), history)
  last = history[-1]
  timed = [r["train_seconds"] for r in history[start_epoch:]]
  waits = [r["data_wait_seconds"] for r in history[start_epoch:] if "data_wait_seconds" in r]
  return {"model": config.model, "epochs": last["epoch"], "steps": last["step"],
          "val_dice": last["val_dice"], "val_loss": last["val_loss"], "val_accuracy": last["val_accuracy"],
          "val_dice_per_class": last.get("val_dice_per_class", {"1": last["val_dice"]}),
          "train_loss": last["train_loss"], "train_accuracy": last["train_accuracy"],
          "train_dice": last["train_dice"], "best_val_dice": best[0], "best_epoch": best[1],
          "train_seconds_per_epoch": float(np.median(timed)) if timed else None,
          "data_wait_seconds_per_epoch": float(np.median(waits)) if waits else None,
          "normalization": inputs.normalization.to_dict(),
          "patch_size": meta_base.get("patch_size"), "batch_size": config.batch_size,
          "augment": config.augment, "schedule": config.schedule,
          "workdir": workdir}


@contextlib.contextmanager
def _removed_on_error(workdir: str):
  """If the block fails, what it wrote into a workdir that held nothing before is
  removed again (a data error leaves no half-built cache that would make the
  next attempt refuse a 'non-empty' workdir)."""
  existed, fresh = os.path.isdir(workdir), not _is_nonempty_dir(workdir)
  try:
    yield
  except BaseException:
    if fresh and os.path.isdir(workdir):
      from jaxseg.train import inputs as inputs_lib
      for name in os.listdir(workdir):
        if name.startswith(inputs_lib.CACHE_DIR):
          shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
      if not existed and not os.listdir(workdir):
        os.rmdir(workdir)
    raise


@contextlib.contextmanager
def _damaged_checkpoint_is_user_error(workdir: str, which: str):
  """A checkpoint that cannot be read is the user's file problem: one line, exit 2."""
  try:
    yield
  except UserError:
    raise
  except (ValueError, OSError, KeyError, TypeError) as e:
    first = (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise ConfigError(f"--workdir: the {which} checkpoint in {workdir} is damaged or unreadable "
                      f"({first})") from None


def _diverged_msg(value, step, epoch, workdir, ckpts, what="loss") -> str:
  last = ckpts.latest_epoch()
  where = (f"the last good checkpoint (epoch {last}) is in {os.path.join(workdir, 'checkpoints')}"
           if last is not None else "no checkpoint was written")
  return (f"training diverged: {what} is {value} at step {step} (epoch {epoch}); stopped, {where}. "
          "Try a smaller --lr.")


def restore_run(workdir: str, which: str = "latest"):
  """A finished (or stopped) run -> (config, model, params (numpy), meta).

  `which` is "latest" or "best"; "best" falls back to "latest" if the run
  has no best checkpoint. ConfigError if `workdir` holds no checkpoint.
  """
  import jax
  import jax.numpy as jnp
  from jaxseg.train import checkpoint, state as state_lib
  if not os.path.isdir(workdir):
    raise ConfigError(f"--workdir: {workdir} does not exist (train a model first: jaxseg train --workdir DIR)")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"--workdir: {workdir} holds no checkpoint (train a model first)")
  ckpts = checkpoint.Checkpoints(workdir, read_only=True)
  try:
    if which == "best" and ckpts.latest_epoch("best") is None:
      which = "latest"
    if ckpts.latest_epoch(which) is None:
      raise ConfigError(f"--workdir: {workdir} holds no finished checkpoint")
    with _damaged_checkpoint_is_user_error(workdir, which):
      meta = ckpts.read_meta(which)
      config = TrainConfig.from_dict(meta["config"])
      model = state_lib.make_model(config, int(meta["in_channels"]))
      tx = state_lib.make_optimizer(config)  # the schedule's length does not shape the state
      sample = jnp.zeros((1, *meta["image_shape"]), jnp.float32)
      target = jax.device_get(jax.eval_shape(lambda: state_lib.create_train_state(
          model, tx, jax.random.PRNGKey(0), sample)))
      target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
      state, meta = ckpts.restore(target, which)
  finally:
    ckpts.close()
  return config, model, state.params, meta
