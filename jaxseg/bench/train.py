"""Seconds per training step of a jaxseg model, after compilation.

The step is ``jaxseg.train.make_train_step`` when the training package
provides one with the signature used below; otherwise a plain step with the
same parts (model.apply with dropout, softmax cross-entropy from
``jaxseg.losses``, optax Adam, ``donate_argnums`` on the state). The result
says which one was timed.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.bench.timing import device_info, device_peak_mb, max_rss_mb


def spatial_shape(image_size) -> tuple[int, ...]:
  """(S, S) for an int (square images), else the given spatial shape, e.g. (D, H, W)."""
  if isinstance(image_size, (tuple, list)):
    return tuple(int(s) for s in image_size)
  return (int(image_size),) * 2


def synthetic_batch(batch: int, image_size, *, in_channels: int = 1, num_classes: int = 2,
                    seed: int = 0):
  """Random images (N, *spatial, C) float32 and labels (N, *spatial) int32: timing does not
  need real data. ``image_size`` is S (square S x S images) or a spatial shape (D, H, W)."""
  rng = np.random.default_rng(seed)
  shape = spatial_shape(image_size)
  x = rng.standard_normal((batch, *shape, in_channels)).astype(np.float32)
  y = rng.integers(0, num_classes, (batch, *shape)).astype(np.int32)
  return x, y


def loss_fn(num_classes: int):
  from jaxseg import losses
  return losses.get("ce")


def plain_train_step(model, tx, loss):
  """(params, opt_state, x, y, key) -> (params, opt_state, loss), jitted, state donated."""
  def step(params, opt_state, x, y, key):
    def objective(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return loss(logits, y)
    value, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value
  return jax.jit(step, donate_argnums=(0, 1))


def prepare_train(model_name: str = "fcn", *, batch_size: int = 8, image_size=256,
                  conv_impl: str = "auto", in_channels: int = 1, num_classes: int = 2,
                  lr: float = 1e-3, seed: int = 0, step_kind: str = "product", model_kw=None):
  """Build, compile and return ``(step_once, info)``; ``step_once()`` runs one step to completion.

  step_kind "product": ``jaxseg.train.make_train_step`` (what ``jaxseg train``
  runs, with its accuracy and Dice metrics); "plain": `plain_train_step`.
  """
  from jaxseg import models
  model = models.create(model_name, num_classes=num_classes, in_channels=in_channels,
                        conv_impl=conv_impl, **(model_kw or {}))
  x_np, y_np = synthetic_batch(batch_size, image_size, in_channels=in_channels,
                               num_classes=num_classes, seed=seed)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  key = jax.random.key(seed)
  params = jax.jit(model.init)(key, x[:1])["params"]
  tx = optax.adam(lr)
  loss = loss_fn(num_classes)
  if step_kind == "product":
    from jaxseg.train import make_train_step
    from jaxseg.train.state import TrainState
    stepper = make_train_step(model, loss, tx, devices=1)
    state = {"s": TrainState(step=jnp.zeros((), jnp.int32), params=params,
                             opt_state=tx.init(params))}
    jitted = getattr(stepper, "_step", None)
    args = (state["s"], x, y, key)

    def run():
      state["s"], metrics = stepper(state["s"], x, y, key)
      jax.block_until_ready((state["s"].params, metrics))
      return metrics["loss"]
  elif step_kind == "plain":
    jitted = plain_train_step(model, tx, loss)
    state = {"params": params, "opt_state": tx.init(params), "i": 0}
    args = (state["params"], state["opt_state"], x, y, key)

    def run():
      state["i"] += 1
      state["params"], state["opt_state"], value = jitted(
          state["params"], state["opt_state"], x, y, jax.random.fold_in(key, state["i"]))
      jax.block_until_ready((state["params"], value))
      return value
  else:
    from jaxseg.errors import ConfigError
    raise ConfigError(f"--step: unknown step {step_kind!r} (product, plain)")

  info = {"step": step_kind, "params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))}
  t0 = time.perf_counter()
  if jitted is not None:
    # Compiling ahead of time fills the same cache the first call uses, so XLA's
    # memory plan and FLOP count come without a second compile.
    try:
      compiled = jitted.lower(*jax.tree.map(_abstract, args)).compile()
      mem, cost = _memory(compiled), _flops(compiled)
      if mem:
        info.update({f"xla_{k}": v for k, v in mem.items()})
      if cost:
        info["xla_gflop_per_step"] = cost / 1e9
    except Exception:  # the analysis is optional
      pass
  run()
  info["compile_seconds"] = time.perf_counter() - t0

  def step_once():
    return float(run())

  return step_once, info


def time_steps(step_once, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step_once()
    times.append(time.perf_counter() - t0)
  return times


def bench_train(model_name: str = "fcn", *, batch_size: int = 8, image_size=256,
                conv_impl: str = "auto", steps: int = 5, warmup: int = 1, **kw) -> dict:
  """Median seconds per train step (``step_seconds``) and what goes with it."""
  rss0 = max_rss_mb()
  step_once, info = prepare_train(model_name, batch_size=batch_size, image_size=image_size,
                                  conv_impl=conv_impl, **kw)
  time_steps(step_once, max(warmup, 1))  # the first run also pays one-off allocations
  times = time_steps(step_once, steps)
  med = statistics.median(times)
  out = {"what": "train", "model": model_name, "batch_size": batch_size, "image_size": image_size,
         "conv_impl": conv_impl, "step_seconds": med, "step_seconds_min": min(times),
         "steps": steps, "images_per_second": batch_size / med, "loss": step_once(),
         "peak_rss_mb": max_rss_mb(), "rss_growth_mb": max_rss_mb() - rss0,
         "device_peak_mb": device_peak_mb(), **info, **device_info()}
  if "xla_gflop_per_step" in out:
    out["gflops"] = out["xla_gflop_per_step"] / med
  return out


def _abstract(a):
  # Shapes only: the state arrays given at build time have been donated since.
  return jax.ShapeDtypeStruct(a.shape, a.dtype)


def _memory(compiled) -> dict | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend implements it
    return None
  if m is None:
    return None
  return {"argument_mb": m.argument_size_in_bytes / 2**20,
          "output_mb": m.output_size_in_bytes / 2**20, "temp_mb": m.temp_size_in_bytes / 2**20}


def _flops(compiled) -> float | None:
  try:
    ca = compiled.cost_analysis()
  except Exception:  # cost analysis is optional per backend
    return None
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  return float(ca.get("flops", 0.0)) or None if ca else None
