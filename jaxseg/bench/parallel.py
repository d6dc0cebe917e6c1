"""`jaxseg bench --what train --devices N --parallel LAYOUTS`: what data parallelism costs.

Times the train step `jaxseg train` runs (`jaxseg.train.make_train_step`, CE +
Dice) on one device and in each data-parallel layout on N devices, on the
same global batch, in interleaved rounds (one device, then each layout, and
again), so that a machine shared with other work slows every layout alike.
Before timing, each layout's first step is checked against one device's
(loss and metrics within 1e-4 relative).

On a CPU, N devices are faked with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``: they share the same
cores, so the ratio to one device measures the layouts' own overhead
(splitting the batch, collectives, smaller per-device work), not a speed-up.
"""

from __future__ import annotations

import re
import statistics
import time

import numpy as np

from jaxseg.errors import ConfigError

LAYOUTS = ("pmap", "shard_map", "jit")
# HLO ops counted in each layout's compiled step.
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def hlo_op_counts(hlo_text: str) -> dict:
  """How many collectives and custom calls a compiled module has, by op name."""
  names = _COLLECTIVES + ("custom-call",)
  found = re.findall(r" (" + "|".join(names) + r")(?:-start)?\(", hlo_text)
  return {n: found.count(n) for n in names if n in found}


def bench_layouts(model_name: str = "unet_small", *, devices: int = 4, layouts=LAYOUTS,
                  batch_size: int = 8, image_size=256, conv_impl: str = "auto",
                  steps: int = 3, rounds: int = 3, warmup: int = 1, loss: str = "ce+dice",
                  log=None) -> dict:
  """Median step seconds on one device and per layout on `devices`, interleaved rounds."""
  import jax
  import optax
  from jaxseg import losses, models
  from jaxseg.bench.train import synthetic_batch
  from jaxseg.train import make_train_step
  from jaxseg.train import state as state_lib
  log = log or (lambda msg: None)
  if devices < 2:
    raise ConfigError(f"--devices: the layouts are compared on >= 2 devices, got {devices}")
  if devices > jax.device_count():
    raise ConfigError(f"--devices: {devices} requested but only {jax.device_count()} available "
                      f"(on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count={devices})")
  if batch_size % devices:
    raise ConfigError(f"--batch-size: {batch_size} is not divisible by --devices {devices}")
  bad = [l for l in layouts if l not in LAYOUTS]
  if bad or not layouts:
    raise ConfigError(f"--parallel: unknown layout {', '.join(bad) or '(none)'}; choose from {', '.join(LAYOUTS)}")
  model = models.create(model_name, conv_impl=conv_impl)
  images, labels = synthetic_batch(batch_size, image_size)
  labels = (labels == 1).astype(np.int32)  # two classes: the CE + Dice of `jaxseg train`
  tx = optax.adam(1e-3)
  loss_fn = losses.get(loss)
  host = jax.device_get(state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), images))
  rng = np.asarray(jax.random.PRNGKey(1))
  runs = {"1 device": make_train_step(model, loss_fn, tx, devices=1)}
  runs.update({layout: make_train_step(model, loss_fn, tx, devices=devices, mode=layout)
               for layout in layouts})
  out = {"what": "train", "model": model_name, "batch_size": batch_size, "image_size": image_size,
         "conv_impl": conv_impl, "loss": loss, "devices": devices, "steps": steps, "rounds": rounds,
         "layouts": {}}
  states, first = {}, {}
  for name, stepper in runs.items():
    log(f"compiling: {name}")
    state = stepper.put_state(host)
    t0 = time.perf_counter()
    compiled = stepper.lower(state, images, labels, rng).compile()
    state, metrics = stepper(state, images, labels, rng)
    jax.block_until_ready(state)
    out["layouts"][name] = {"compile_seconds": time.perf_counter() - t0,
                            "hlo_ops": hlo_op_counts(compiled.as_text())}
    first[name] = {k: float(v) for k, v in metrics.items()}
    for _ in range(warmup):
      state, _ = stepper(state, images, labels, rng)
    jax.block_until_ready(state)
    states[name] = state
  wrong = [name for name in runs if any(
      not np.isclose(first[name][k], first["1 device"][k], rtol=1e-4, atol=1e-6) for k in first[name])]
  out["first_step"] = first
  if wrong:
    out["wrong"] = wrong
    return out
  times = {name: [] for name in runs}
  for r in range(rounds):
    for name, stepper in runs.items():
      state = states[name]
      for _ in range(steps):
        t0 = time.perf_counter()
        state, _ = stepper(state, images, labels, rng)
        jax.block_until_ready(state)
        times[name].append(time.perf_counter() - t0)
      states[name] = state
    log(f"round {r + 1}/{rounds}: " + ", ".join(
        f"{n} {statistics.median(t[-steps:]):.3f} s" for n, t in times.items()))
  one = statistics.median(times["1 device"])
  for name, t in times.items():
    med = statistics.median(t)
    out["layouts"][name].update({"step_seconds": med, "step_seconds_min": min(t),
                                 "images_per_second": batch_size / med, "over_one_device": med / one})
  out["step_seconds"] = out["layouts"][layouts[0]]["step_seconds"]
  return out


def format_layouts(result: dict) -> str:
  rows = ["| layout | devices | step s (median) | min s | images/s | vs 1 device | compile s | HLO ops |",
          "|---|---|---|---|---|---|---|---|"]
  for name, r in result["layouts"].items():
    n = 1 if name == "1 device" else result["devices"]
    ops = ", ".join(f"{k} {v}" for k, v in r["hlo_ops"].items()) or "-"
    if "step_seconds" not in r:
      rows.append(f"| {name} | {n} | - | - | - | - | {r['compile_seconds']:.1f} | {ops} |")
      continue
    rows.append(f"| {name} | {n} | {r['step_seconds']:.4f} | {r['step_seconds_min']:.4f} "
                f"| {r['images_per_second']:.1f} | {r['over_one_device']:.2f}x "
                f"| {r['compile_seconds']:.1f} | {ops} |")
  return "\n".join(rows)


def run(args) -> dict:
  """The `jaxseg bench --what train --devices N` entry: prints the table, returns the JSON dict."""
  import sys
  from jaxseg.bench.timing import device_info
  from jaxseg.models import MODELS
  model = args.model or "unet_small"
  if model not in MODELS:
    raise ConfigError(f"--model: unknown model {model!r}; choose one of {', '.join(MODELS)}")
  impls = list(args.impls or ("auto",))
  if len(impls) != 1:
    raise ConfigError("--impls: one conv impl with --devices")
  info = device_info()
  print(f"device: {info['platform']} / {info['device_kind']} x{info['device_count']}, jax {info['jax']}, "
        f"{info['host_cpus']} host cpus, load average {' '.join(f'{v:.2f}' for v in info['load_avg'])}, "
        f"XLA_FLAGS={info.get('xla_flags') or '(unset)'}, "
        f"C++ conv kernels {'on' if info.get('cpu_conv_kernels') else 'off'}")
  result = bench_layouts(model, devices=args.devices, layouts=tuple(args.parallel),
                         batch_size=args.batch_size, image_size=args.image_size, conv_impl=impls[0],
                         steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
  print(format_layouts(result))
  if result.get("wrong"):
    print(f"first step differs from one device's: {', '.join(result['wrong'])}", file=sys.stderr)
  return {**result, **info}
