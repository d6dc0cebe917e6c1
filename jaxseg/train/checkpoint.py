"""orbax checkpoints of a run: the last N epochs and the best epoch by val Dice.

Layout under the workdir::

  checkpoints/<epoch>/{state,meta}   the last `keep` epochs (for --resume)
  best/<epoch>/{state,meta}          the single best epoch by val_dice

Two managers so that keeping the best never evicts the latest (and the
reverse). orbax writes into a temporary directory and renames it when the
save is complete, so a kill during a save leaves the previous checkpoint
usable. `state` is a numpy pytree (TrainState); `meta` is JSON (epoch,
config, metric history, rng, input shape).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import orbax.checkpoint as ocp

from jaxseg.errors import ConfigError

# How long a failed restore waits for its other, still running reads.
_DRAIN_SECONDS = 60.0


class _DrainingEventLoop(asyncio.SelectorEventLoop):
  """An event loop that lets its unfinished tasks finish before it closes.

  orbax runs each restore in a fresh loop and closes it as soon as the
  restore coroutine returns or raises (`asyncio_utils.run_sync`, without
  `asyncio.run`'s teardown). When one array read fails, the reads of the
  other arrays are still pending on TensorStore futures; each completes a
  few ms later in a TensorStore thread and calls `loop.call_soon_threadsafe`
  on the closed loop, which prints an "Event loop is closed" traceback (via
  sys.unraisablehook) beside our one-line error. Here they finish first.
  Waiting rather than cancelling: a TensorStore future whose result is
  ready but not yet handed to Python ignores `cancel()` and still calls
  back later, from its own thread.
  """

  def close(self):
    if not self.is_running() and not self.is_closed():
      deadline = time.monotonic() + _DRAIN_SECONDS
      while pending := asyncio.all_tasks(self):
        left = deadline - time.monotonic()
        if left <= 0:  # a stuck read: give up on it rather than hang the command
          for t in pending:
            t.cancel()
          self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
          break
        self.run_until_complete(asyncio.wait(pending, timeout=left))
      # callbacks already queued, e.g. orbax's gather marking its failed reads'
      # errors as seen (else "Task exception was never retrieved" at exit)
      self.run_until_complete(asyncio.sleep(0))
    super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):

  def new_event_loop(self):
    return _DrainingEventLoop()


@contextlib.contextmanager
def _draining_event_loops():
  """orbax calls made inside get `_DrainingEventLoop`s (it builds them with
  `asyncio.new_event_loop()`, so the policy is the public hook)."""
  old = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_DrainingPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(old)


class Checkpoints:

  def __init__(self, workdir: str, *, keep: int = 3, read_only: bool = False):
    import jax
    self.workdir = os.path.abspath(workdir)
    multi = ocp.options.MultiprocessingOptions(primary_host=0)
    del jax
    def options(max_to_keep):
      if read_only:  # never saves; (orbax's read_only=True only adds warnings)
        return ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False,
                                            multiprocessing_options=multi)
      return ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                          multiprocessing_options=multi)
    self.latest = ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"), options=options(keep))
    self.best = ocp.CheckpointManager(os.path.join(self.workdir, "best"), options=options(1))

  def save(self, epoch: int, state, meta: dict, *, is_best: bool) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    # best first: if we are killed in between, the latest (resume point) is
    # still the previous epoch and the rerun saves both again.
    if is_best:
      if epoch in self.best.all_steps():  # saved just before a kill; this run redid the epoch
        self.best.delete(epoch)
      self.best.save(epoch, args=args, force=True)
      self.best.wait_until_finished()
    self.latest.save(epoch, args=args, force=True)
    self.latest.wait_until_finished()

  def _manager(self, which: str):
    if which not in ("latest", "best"):
      raise ConfigError(f"--checkpoint: expected 'latest' or 'best', got {which!r}")
    return self.latest if which == "latest" else self.best

  def latest_epoch(self, which: str = "latest") -> int | None:
    return self._manager(which).latest_step()

  def read_meta(self, which: str = "latest", epoch: int | None = None) -> dict | None:
    mngr = self._manager(which)
    epoch = mngr.latest_step() if epoch is None else epoch
    if epoch is None:
      return None
    with _draining_event_loops():
      out = mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def restore(self, target_state, which: str = "latest", epoch: int | None = None):
    """-> (state like `target_state` (numpy), meta)."""
    mngr = self._manager(which)
    epoch = mngr.latest_step() if epoch is None else epoch
    with _draining_event_loops():  # a damaged array leaves the others' reads pending
      out = mngr.restore(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def close(self) -> None:
    self.latest.close()
    self.best.close()
