"""The training input pipeline on Grain: order, augmentation, batches, worker processes.

Training position ``p`` (counted over the whole run) is example ``i = p mod E``
of epoch ``p // E + 1`` (E = batches per epoch x batch size); it reads slice
``epoch_order(seed, epoch)[i]`` and augments it with a generator seeded by
(seed, epoch, slice index). So every batch is a function of (seed, epoch,
position) only, whatever the number of workers, and a pipeline rebuilt at
batch ``k`` (``start_batch``, what a checkpoint stores as the iterator's
``next_index``) continues exactly where a run stopped.

Patch training (:func:`training_patches`) has the same structure over the
items of an epoch, ``patches_per_case`` per case: item ``j`` of the epoch's
permutation is patch ``k = j // cases`` of case ``j % cases``, placed by
:class:`~jaxseg.data.patches.PatchSampler` with a generator seeded by (seed,
epoch, case, k) and augmented from (seed, epoch, j). Patches are read from
the cases' store (a :class:`~jaxseg.data.preprocess.CaseCache` reads just the
patch from disk), so the pipeline holds only the examples in flight.

Grain's ``MapDataset`` gives the random-access chain (source -> map ->
batch); ``mp_prefetch`` runs it in worker processes, each producing whole
batches, and without workers a background thread prefetches. The example
source holds its arrays and pickles them into each worker.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import numpy as np

from jaxseg.data.augment import Augment, augment_example, preset
from jaxseg.data.batching import epoch_order
from jaxseg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """How batches are produced (never what they hold).

  workers: Grain worker processes (0: the main process, with a prefetch
    thread of ``buffer`` batches).
  buffer: batches each worker (or the thread) keeps ready.
  read_threads: threads that compute batches ahead (Grain's ``ReadOptions``;
    its defaults, 16 threads and 500 batches ahead, would hold up to a whole
    epoch in memory).
  """
  workers: int = 0
  buffer: int = 2
  read_threads: int = 2


class _EpochOrder:
  """epoch -> the permutation of ``n`` items for that epoch, the latest one kept.

  Read threads can be on two epochs at once (the last batches of one, the
  first of the next), so the cached (epoch, order) pair is read once per call
  and replaced whole, never compared and indexed in two reads.
  """

  def __init__(self, n: int, seed: int, shuffle: bool = True):
    self.n, self.seed, self.shuffle = n, seed, shuffle
    self._latest = (None, None)

  def __call__(self, epoch: int) -> np.ndarray:
    latest = self._latest
    if latest[0] != epoch:
      latest = (epoch, epoch_order(self.n, seed=self.seed, epoch=epoch, shuffle=self.shuffle))
      self._latest = latest
    return latest[1]


class _Examples:
  """Random access to training positions -> un-augmented examples."""

  def __init__(self, images, labels, *, batch_size: int, steps_per_epoch: int, epochs: int,
               seed: int, shuffle: bool = True):
    self.images, self.labels = images, labels
    self.per_epoch = batch_size * steps_per_epoch
    self.epochs, self.seed, self.shuffle = epochs, seed, shuffle
    self._order = _EpochOrder(len(labels), seed, shuffle)

  def __len__(self) -> int:
    return self.per_epoch * self.epochs

  def __getitem__(self, position: int) -> dict:
    epoch, i = divmod(int(position), self.per_epoch)
    epoch += 1
    index = int(self._order(epoch)[i])
    return {"image": self.images[index], "label": self.labels[index], "epoch": epoch, "index": index}


class _Patches:
  """Random access to training positions -> un-augmented patches of cases."""

  def __init__(self, cases, sampler, *, batch_size: int, steps_per_epoch: int, epochs: int, seed: int,
               patches_per_case: int = 1, pad_value: float = 0.0):
    self.cases, self.sampler = cases, sampler
    self.per_epoch = batch_size * steps_per_epoch
    self.items = len(cases) * patches_per_case
    self.epochs, self.seed, self.pad_value = epochs, seed, pad_value
    self._order = _EpochOrder(self.items, seed)

  def __len__(self) -> int:
    return self.per_epoch * self.epochs

  def __getitem__(self, position: int) -> dict:
    epoch, i = divmod(int(position), self.per_epoch)
    epoch += 1
    item = int(self._order(epoch)[i])
    case, k = item % len(self.cases), item // len(self.cases)
    rng = np.random.default_rng([self.seed % 2**63, epoch, 4, case, k])
    start = self.sampler.start(self.cases.shape(case), self.cases.foreground(case), rng)
    image, label = self.cases.read_region(case, start, self.sampler.size, pad_value=self.pad_value)
    return {"image": image, "label": label, "epoch": epoch, "index": item}


@dataclasses.dataclass(frozen=True)
class _AugmentMap:
  """Grain map: an example -> its augmented (image, label), seeded by (seed, epoch, index)."""
  augment: Augment
  seed: int

  def __call__(self, ex: dict) -> dict:
    rng = np.random.default_rng([self.seed % 2**63, int(ex["epoch"]), 1, int(ex["index"])])
    image, label = augment_example(ex["image"], ex["label"], rng, self.augment)
    return {"image": image, "label": label}


def _plain(ex: dict) -> dict:
  return {"image": ex["image"], "label": ex["label"]}


def training_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, steps_per_epoch: int,
                     epochs: int, seed: int, augment="none", shuffle: bool = True):
  """The Grain ``MapDataset`` of every training batch of the run, in order.

  Element ``k`` is batch ``k`` of the run (epoch ``k // steps_per_epoch + 1``):
  a dict of ``image`` ``(B, *spatial, C)`` float32 and ``label`` ``(B, *spatial)``.
  """
  import grain
  cfg = preset(augment)
  source = _Examples(images, labels, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                     epochs=epochs, seed=seed, shuffle=shuffle)
  ds = grain.MapDataset.source(source)
  ds = ds.map(_plain if cfg.is_identity else _AugmentMap(cfg, int(seed)))
  return ds.batch(batch_size, drop_remainder=True)


def _allow_grain_workers() -> None:
  """Grain's worker processes read absl flags, which a program that is not an
  absl app never parses; mark them parsed (their defaults) once."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class BatchIterator:
  """Iterates a batch ``MapDataset`` from ``start_batch``, timing the waits.

  ``waited`` accumulates the seconds the caller spent blocked in ``next``
  (the train step waiting on data); ``next_index`` is the batch a resumed
  run starts from. Use as a context manager, or call ``close``.
  """

  def __init__(self, batches, *, start_batch: int = 0, options: PipelineOptions = PipelineOptions()):
    import grain
    if options.workers < 0 or options.buffer < 1 or options.read_threads < 1:
      raise ConfigError(f"--data-workers: must be >= 0, got {options.workers}")
    reads = grain.ReadOptions(num_threads=options.read_threads,
                              prefetch_buffer_size=max(options.buffer, options.read_threads))
    ds = batches[start_batch:].to_iter_dataset(reads)
    if options.workers > 0:
      _allow_grain_workers()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=options.workers,
                                                       per_worker_buffer_size=options.buffer))
    else:
      ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=options.buffer)
    self._it = iter(ds)
    self.next_index = start_batch
    self.waited = 0.0

  def __iter__(self) -> Iterator:
    return self

  def __next__(self) -> tuple[np.ndarray, np.ndarray]:
    t = time.perf_counter()
    batch = next(self._it)
    self.waited += time.perf_counter() - t
    self.next_index += 1
    return batch["image"], batch["label"]

  def take(self, n: int):
    """The next n batches."""
    for _ in range(n):
      yield next(self)

  def close(self) -> None:
    it, self._it = self._it, None
    if it is not None and hasattr(it, "close"):
      it.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def patches_per_epoch(num_cases: int, patches_per_case: int, batch_size: int) -> int:
  """Batches per epoch of patch training (the last incomplete batch is dropped)."""
  return num_cases * patches_per_case // batch_size


def training_patches(cases, sampler, *, batch_size: int, steps_per_epoch: int, epochs: int, seed: int,
                     augment="none", patches_per_case: int = 1):
  """The Grain ``MapDataset`` of every training batch of a patch-trained run, in order.

  Args:
    cases: the store of cases: ``len``, ``shape(i)``, ``foreground(i)`` and
      ``read_region(i, start, size, pad_value=)``
      (:class:`~jaxseg.data.preprocess.CaseCache`, :class:`~jaxseg.data.patches.SliceCases`).
    sampler: a :class:`~jaxseg.data.patches.PatchSampler`.
    augment: a preset name or :class:`~jaxseg.data.augment.Augment`, applied to each patch.

  Element ``k`` is batch ``k`` of the run: ``image`` ``(B, *patch, C)`` float32
  and ``label`` ``(B, *patch)`` int32.
  """
  import grain
  cfg = preset(augment)
  source = _Patches(cases, sampler, batch_size=batch_size, steps_per_epoch=steps_per_epoch, epochs=epochs,
                    seed=seed, patches_per_case=patches_per_case)
  ds = grain.MapDataset.source(source)
  ds = ds.map(_plain if cfg.is_identity else _AugmentMap(cfg, int(seed)))
  return ds.batch(batch_size, drop_remainder=True)
