"""What a training run feeds its model: whole 2-D slices, or patches of cases.

:func:`prepare` picks one of two forms from the model and ``--patch-size``:

- :class:`SliceInputs` (2-D models without ``--patch-size``): every slice of
  every case, in memory, padded to the model's size multiple; batches of
  whole slices; val metrics per slice (the lab's Dice per image).
- :class:`PatchInputs` (3-D models, and 2-D models with ``--patch-size``):
  batches of patches (:mod:`jaxseg.data.patches`) through the Grain
  pipeline; val metrics on whole cases by sliding windows
  (:mod:`jaxseg.train.casewise`). A 3-D model's cases are volumes,
  preprocessed (resampled, normalised, cropped) one at a time into a cache
  in the run directory (``preprocessed/``) and read patch by patch from it,
  so memory holds the cases in flight, not the data set. A 2-D model's
  patches come from its in-memory slices.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from jaxseg.errors import ConfigError, DataError

CACHE_DIR = "preprocessed"


def prepare(config, workdir: str, *, log: Callable[[str], None] = lambda m: None, process_index: int = 0,
            process_count: int = 1):
  """The inputs of a run of ``config`` (resolved) in ``workdir``."""
  from jaxseg import models
  nd = models.spatial_dims(config.model)
  multiple = models.size_multiple(config.model)
  patch = config.patch_size
  if patch is not None:
    patch = tuple(int(p) for p in patch)
    if len(patch) != nd:
      want = "D,H,W" if nd == 3 else "H,W"
      raise ConfigError(f"--patch-size: {','.join(map(str, patch))} has {len(patch)} values, but model "
                        f"{config.model!r} is a {nd}-D model: give {want}")
    if str(getattr(models.create(config.model), "padding", "same")).upper() == "VALID":
      raise ConfigError(f"--patch-size: model {config.model!r} uses unpadded convs (its logits are smaller "
                        f"than its input), so its windows cannot tile a case; use a same-padded model "
                        f"(unet_small, unet3d_small, ...)")
    bad = [p for p in patch if p % multiple]
    if bad:
      raise ConfigError(f"--patch-size: {','.join(map(str, patch))}: model {config.model!r} needs sizes "
                        f"that are multiples of {multiple}")
  if nd == 3:
    cache = os.path.join(workdir, CACHE_DIR if process_count == 1 else f"{CACHE_DIR}-p{process_index}")
    return PatchInputs.of_volumes(config, cache, patch, multiple, log=log)
  from jaxseg import data as data_lib
  train_ds, val_ds = data_lib.train_val(config.data, config.val_data, num_classes=config.num_classes,
                                        val_fraction=config.val_fraction, seed=config.seed,
                                        normalize=config.normalize, spacing=config.spacing)
  if patch is not None:
    return PatchInputs.of_slices(config, train_ds, val_ds, patch)
  return SliceInputs(config, train_ds, val_ds, multiple)


def check_volumes(model: str):
  """``check(case, ref)`` for a 3-D model's cases: a 2-D image is a one-line DataError naming the model."""
  def check(case, ref):
    if case.ndim != 3:
      raise DataError(f"model {model!r} is a 3-D model: it takes volumes, but case {ref.name!r} is a "
                      f"2-D image {tuple(case.label.shape)}; give volumes, or use a 2-D model "
                      f"(fcn, unet_small, ...)")
  return check


class SliceInputs:
  """Whole slices in memory: what 2-D models trained on before patches (unchanged numbers)."""

  def __init__(self, config, train_ds, val_ds, multiple: int):
    if multiple > 1:  # sizes the model cannot take are zero-padded (labels: background) at the bottom/right
      train_ds = train_ds.padded_to(multiple)
      val_ds = val_ds.padded_to(multiple) if val_ds is not None else None
    self.config, self.train, self.val = config, train_ds, val_ds
    from jaxseg import data as data_lib
    self.steps_per_epoch = data_lib.num_batches(train_ds, config.batch_size, drop_remainder=True)
    if self.steps_per_epoch == 0:
      raise ConfigError(f"--batch-size: {config.batch_size} is larger than the "
                        f"{len(train_ds.images)} training images of {config.data}")
    if val_ds is None or len(val_ds.images) == 0:
      raise ConfigError(f"--val-data: no validation images for {config.data}")
    self.in_channels = int(train_ds.images.shape[-1])
    self.normalization = train_ds.normalization
    self.init_sample = train_ds.images[:1]
    self._sample = _sample_index(val_ds)
    self._eval_step = None

  def meta(self) -> dict:
    return {"image_shape": list(self.train.images.shape[1:]), "in_channels": self.in_channels,
            "num_train": int(len(self.train.images)), "num_val": int(len(self.val.images)),
            "normalization": self.normalization.to_dict(), "spacing": _spacing(self.config)}

  def batches(self):
    from jaxseg.data import pipeline
    c = self.config
    return pipeline.training_batches(self.train.images, self.train.labels, batch_size=c.batch_size,
                                     steps_per_epoch=self.steps_per_epoch, epochs=c.epochs, seed=c.seed,
                                     augment=c.augment)

  def validate(self, model, params, loss_fn) -> dict:
    from jaxseg.train import step as step_lib
    if self._eval_step is None:
      self._eval_step = step_lib.make_eval_step(model, loss_fn)
    return step_lib.evaluate(model, params, self.val, batch_size=self.config.batch_size, loss_fn=loss_fn,
                             eval_step=self._eval_step)

  def figure(self, model, params, path: str, writer, epoch: int) -> None:
    image, label = self.val.images[self._sample:self._sample + 1], self.val.labels[self._sample:self._sample + 1]
    _, logits = self._eval_step(params, image, label)
    _save_figure(path, writer, epoch, image[0], label[0], np.asarray(logits).argmax(-1)[0])


class PatchInputs:
  """Patches of cases for training, whole cases for validation."""

  def __init__(self, config, train_cases, val_cases, patch, *, in_channels: int, normalization, spacing, augment,
               preprocessing=None):
    from jaxseg.data import patches as patches_lib
    from jaxseg.data import pipeline
    self.config, self.train, self.val, self.patch = config, train_cases, val_cases, tuple(patch)
    self.sampler = patches_lib.PatchSampler(self.patch)
    self.patches_per_case = int(config.patches_per_case)
    self.steps_per_epoch = pipeline.patches_per_epoch(len(train_cases), self.patches_per_case, config.batch_size)
    if self.steps_per_epoch == 0:
      raise ConfigError(f"--batch-size: {config.batch_size} is larger than the {len(train_cases)} x "
                        f"{self.patches_per_case} patches per epoch of {config.data} "
                        f"(raise --patches-per-case or lower --batch-size)")
    if len(val_cases) == 0:
      raise ConfigError(f"--val-data: no validation cases for {config.data}")
    self.in_channels = int(in_channels)
    self.normalization = normalization
    self.spacing = spacing
    self.augment = augment
    self.preprocessing = preprocessing
    self.init_sample = np.zeros((1, *self.patch, self.in_channels), np.float32)
    self._windows = None
    self._sample = None

  @classmethod
  def of_volumes(cls, config, cache_dir: str, patch, multiple: int, *, log):
    """A 3-D model's inputs: the cases of ``config.data`` preprocessed into ``cache_dir``."""
    from jaxseg import data as data_lib
    from jaxseg.data import augment as augment_lib
    from jaxseg.data import normalization as norm_lib
    from jaxseg.data import patches as patches_lib
    from jaxseg.data import preprocess
    for spec in (config.data, config.val_data):
      if spec is not None and data_lib.spec_dims(spec) == 2:
        raise DataError(f"model {config.model!r} is a 3-D model: it takes volumes, but data spec {spec!r} "
                        f"holds 2-D images; give volumes (synthetic3d, acdc, atria, a folder of volumes) "
                        f"or use a 2-D model (fcn, unet_small, ...)")
    train_refs, val_refs, _, _ = data_lib.train_val_refs(config.data, config.val_data,
                                                         num_classes=config.num_classes,
                                                         val_fraction=config.val_fraction, seed=config.seed)
    check = check_volumes(config.model)
    scheme = config.normalize or data_lib.default_normalization(config.data)
    if scheme == "ct":
      log(f"reading {len(train_refs)} training cases for the ct statistics")
    def checked(refs):
      for r in refs:
        case = r.read()
        check(case, r)
        yield case
    norm = norm_lib.fit_streaming(scheme, checked(train_refs) if scheme == "ct" else iter(()),
                                  count=len(train_refs))
    prep = preprocess.Preprocessing(norm, spacing=config.spacing)
    extra = {"num_classes": config.num_classes}
    log(f"preprocessing {len(train_refs)} training and {len(val_refs)} validation cases into {cache_dir}")
    train = preprocess.CaseCache.open_or_build(train_refs, prep, os.path.join(cache_dir, "train"),
                                               check=check, extra=extra, log=log)
    val = preprocess.CaseCache.open_or_build(val_refs, prep, os.path.join(cache_dir, "val"),
                                             check=check, extra=extra, log=log)
    if len(val) and val.channels != train.channels:
      raise DataError(f"{config.val_data or config.data}: {val.channels} image channels, but the training "
                      f"cases have {train.channels}")
    shapes = [train.shape(i) for i in range(len(train))]
    if patch is None:
      patch = patches_lib.default_patch_size(shapes, multiple)
    spacing = tuple(float(s) for s in np.median([train.spacing(i) for i in range(len(train))], axis=0))
    augment = augment_lib.for_volumes(augment_lib.preset(config.augment), spacing, patch)
    return cls(config, train, val, patch, in_channels=train.channels, normalization=norm, spacing=spacing,
               augment=augment, preprocessing=prep)

  @classmethod
  def of_slices(cls, config, train_ds, val_ds, patch):
    """A 2-D model's patches of its in-memory slices (each at its own size)."""
    from jaxseg.data import augment as augment_lib
    from jaxseg.data import patches as patches_lib
    if val_ds is None or len(val_ds.images) == 0:
      raise ConfigError(f"--val-data: no validation images for {config.data}")
    return cls(config, patches_lib.SliceCases(train_ds), patches_lib.SliceCases(val_ds), patch,
               in_channels=train_ds.images.shape[-1], normalization=train_ds.normalization, spacing=None,
               augment=augment_lib.preset(config.augment))

  def meta(self) -> dict:
    return {"image_shape": [*self.patch, self.in_channels], "patch_size": list(self.patch),
            "in_channels": self.in_channels, "num_train": len(self.train), "num_val": len(self.val),
            "normalization": self.normalization.to_dict(), "spacing": _spacing(self.config),
            "patches_per_case": self.patches_per_case,
            "augment_volumes": None if self.spacing is None else {
                "rotate_3d": self.augment.rotate_3d, "inplane_only": self.augment.inplane_only}}

  def batches(self):
    from jaxseg.data import pipeline
    c = self.config
    return pipeline.training_patches(self.train, self.sampler, batch_size=c.batch_size,
                                     steps_per_epoch=self.steps_per_epoch, epochs=c.epochs, seed=c.seed,
                                     augment=self.augment, patches_per_case=self.patches_per_case)

  def _val_cases(self):
    for i in range(len(self.val)):
      image, label = self.val.read(i)
      yield self.val_name(i), image, label

  def val_name(self, i: int) -> str:
    return self.val.name(i) if hasattr(self.val, "name") else f"slice {i}"

  def validate(self, model, params, loss_fn) -> dict:
    from jaxseg.train import casewise
    if self._windows is None:
      self._windows = casewise.model_windows(model)
    out = casewise.evaluate_cases(self._windows(params), self._val_cases(), window=self.patch, loss_fn=loss_fn,
                                  num_classes=self.config.num_classes, batch_size=self.config.batch_size,
                                  overlap=self.config.overlap, sample=True)
    self._sample = out.pop("sample")
    return out

  def figure(self, model, params, path: str, writer, epoch: int) -> None:
    if self._sample is None:
      return
    _, image, label, pred = self._sample
    if image.ndim == 4:  # a volume: its middle slice
      mid = image.shape[0] // 2
      image, label, pred = image[mid], label[mid], pred[mid]
    _save_figure(path, writer, epoch, image, label, pred)


def _spacing(config):
  return None if config.spacing is None else list(config.spacing)


def _sample_index(ds) -> int:
  """The lab's `sample_image`: the first val image with some foreground."""
  fg = np.flatnonzero((ds.labels.reshape(len(ds.labels), -1) > 0).any(axis=1))
  return int(fg[0]) if len(fg) else 0


def _save_figure(path, writer, epoch, image, label, pred) -> None:
  from jaxseg.train import logging as logs
  logs.save_sample_png(path, image, label, pred, title=f"epoch {epoch}")
  writer.image("val/sample", logs.sample_panel(image, label, pred)[..., None].repeat(3, -1), epoch)
