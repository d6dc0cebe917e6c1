"""The same training step in jaxseg, PyTorch (CPU) and Keras 3 on JAX, timed in turn.

Each framework runs in its own worker process (own threads, own imports,
own peak memory), builds the model, compiles and warms up, then waits. The
parent asks each worker in turn for a block of steps, rotating the order
every round, so that all frameworks see the same machine load and the
ratios are fair on a shared, noisy machine.

Same for all three: model architecture (the lab FCN or the DSB-2018
U-Net), input batch shape, pixel-wise softmax cross-entropy on logits,
Adam with learning rate 1e-3, float32, random data. PyTorch uses NCHW (its
default on CPU) and symmetric padding k//2, which has the FLOPs of
TensorFlow's "SAME" padding jaxseg and Keras use.

``unet3d_small`` (3-D) runs against PyTorch only (``Conv3d``,
``InstanceNorm3d(affine=True)``, ``LeakyReLU(0.01)``, ``MaxPool3d``,
``ConvTranspose3d``: the same layers and parameter count as jaxseg's, NCDHW).

Memory: each worker reports ``setup_peak_rss_mb`` (its peak resident memory
up to the end of warm-up, compilation included) and ``step_peak_rss_mb``,
the peak resident memory while the timed steps ran (Linux: the high-water
mark is reset through ``/proc/self/clear_refs`` before each block and read
from ``VmHWM`` after it), with ``rss_before_steps_mb`` beside it; their
difference is what one step allocates on top of the model, its optimizer
state and the batch.

Run a worker by hand: ``python -m jaxseg.bench.peers torch fcn 8 256``
(3-D: ``python -m jaxseg.bench.peers torch unet3d_small 2 32,64,64``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

FRAMEWORKS = ("jaxseg", "torch", "keras")
PEER_MODELS = ("fcn", "unet_small", "unet3d_small")
# Frameworks that have each model (Keras' peers are 2-D only).
MODEL_FRAMEWORKS = {"fcn": FRAMEWORKS, "unet_small": FRAMEWORKS, "unet3d_small": ("jaxseg", "torch")}
_UNET_WIDTHS = (16, 32, 64, 128, 256)
_UNET_DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)
_TAG = "@@"  # protocol lines start with this; anything else a library prints is ignored


def missing_peers() -> list[str]:
  """Names of the peer packages that are not installed."""
  return [name for name in ("torch", "keras") if _find_spec(name) is None]


def _find_spec(name):
  if name in sys.modules and sys.modules[name] is None:  # blocked (as tests do)
    return None
  return importlib.util.find_spec(name)


def require_peers() -> None:
  """Raise a one-line UserError naming the missing packages and how to install them."""
  missing = missing_peers()
  if missing:
    from jaxseg.errors import UserError
    raise UserError(f"--peers needs PyTorch and Keras 3 (missing: {', '.join(missing)}); "
                    "install them with: pip install -e '.[peers]'")


# ---------------------------------------------------------------- PyTorch


def torch_model(name: str, *, in_channels: int = 1, num_classes: int = 2):
  import torch.nn as nn
  if name == "fcn":
    return nn.Sequential(
        nn.Conv2d(in_channels, 100, 5, stride=2, padding=2), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(100, 200, 5, stride=2, padding=2), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(200, 300, 3, padding=1), nn.ReLU(),
        nn.Conv2d(300, 300, 3, padding=1), nn.ReLU(),
        nn.Conv2d(300, num_classes, 3, padding=1), nn.ReLU(),
        # Keras' SAME 31x31/16 transposed conv: out = 16*in = (in-1)*16 - 2*8 + 31 + 1.
        nn.ConvTranspose2d(num_classes, num_classes, 31, stride=16, padding=8, output_padding=1))
  if name == "unet_small":
    return _TorchUNet(in_channels, num_classes)
  if name == "unet3d_small":
    return _torch_unet3d_class()(in_channels, num_classes)
  raise ValueError(name)


def _torch_unet3d_class(widths=(16, 32, 64, 128)):
  """jaxseg's unet3d_small in PyTorch: conv-instance norm-leaky ReLU blocks, max-pool, up-convs."""
  import torch
  import torch.nn as nn

  class Block(nn.Sequential):
    def __init__(self, cin, c):
      super().__init__(nn.Conv3d(cin, c, 3, padding=1), nn.InstanceNorm3d(c, affine=True),
                       nn.LeakyReLU(0.01), nn.Conv3d(c, c, 3, padding=1),
                       nn.InstanceNorm3d(c, affine=True), nn.LeakyReLU(0.01))

  class UNet3D(nn.Module):
    def __init__(self, in_channels, num_classes):
      super().__init__()
      cin, self.down, self.up, self.dec = in_channels, nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
      for c in widths:
        self.down.append(Block(cin, c))
        cin = c
      for c in widths[-2::-1]:
        self.up.append(nn.ConvTranspose3d(cin, c, 2, stride=2))
        self.dec.append(Block(2 * c, c))  # jaxseg concatenates [up-conv, skip], so does this
        cin = c
      self.head = nn.Conv3d(cin, num_classes, 1)
      self.pool = nn.MaxPool3d(2)

    def forward(self, x):
      skips = []
      for i, block in enumerate(self.down):
        x = block(x if i == 0 else self.pool(x))
        skips.append(x)
      for up, dec, skip in zip(self.up, self.dec, skips[-2::-1]):
        x = dec(torch.cat([up(x), skip], dim=1))
      return self.head(x)

  return UNet3D


def _torch_unet_class():
  import torch
  import torch.nn as nn

  class Block(nn.Sequential):
    def __init__(self, cin, c, rate):
      super().__init__(nn.Conv2d(cin, c, 3, padding=1), nn.ELU(), nn.Dropout(rate),
                       nn.Conv2d(c, c, 3, padding=1), nn.ELU())

  class UNet(nn.Module):
    def __init__(self, in_channels, num_classes):
      super().__init__()
      cin, self.down, self.up, self.dec = in_channels, nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
      for c, r in zip(_UNET_WIDTHS, _UNET_DROPOUT):
        self.down.append(Block(cin, c, r))
        cin = c
      for c, r in zip(_UNET_WIDTHS[-2::-1], _UNET_DROPOUT[-2::-1]):
        self.up.append(nn.ConvTranspose2d(cin, c, 2, stride=2))
        self.dec.append(Block(2 * c, c, r))
        cin = c
      self.head = nn.Conv2d(cin, num_classes, 1)
      self.pool = nn.MaxPool2d(2)

    def forward(self, x):
      skips = []
      for i, block in enumerate(self.down):
        x = block(x if i == 0 else self.pool(x))
        skips.append(x)
      for up, dec, skip in zip(self.up, self.dec, skips[-2::-1]):
        x = dec(torch.cat([up(x), skip], dim=1))
      return self.head(x)

  return UNet


def _TorchUNet(in_channels, num_classes):
  return _torch_unet_class()(in_channels, num_classes)


def torch_prepare(model: str, batch: int, size: int, *, in_channels=1, num_classes=2, seed=0,
                  **_):
  import numpy as np
  import torch
  from jaxseg.bench.train import synthetic_batch
  torch.manual_seed(seed)
  net = torch_model(model, in_channels=in_channels, num_classes=num_classes)
  net.train()
  x_np, y_np = synthetic_batch(batch, size, in_channels=in_channels, num_classes=num_classes,
                               seed=seed)
  channels_first = (0, x_np.ndim - 1) + tuple(range(1, x_np.ndim - 1))
  x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(channels_first)))
  y = torch.from_numpy(y_np.astype(np.int64))
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step_once():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())

  info = {"version": torch.__version__, "threads": torch.get_num_threads(),
          "params": sum(p.numel() for p in net.parameters())}
  return step_once, info


# ---------------------------------------------------------------- Keras 3 on JAX


def keras_model(name: str, *, size: int, in_channels: int = 1, num_classes: int = 2):
  import keras
  from keras import layers as L
  if name == "fcn":
    return keras.Sequential([
        keras.Input((size, size, in_channels)),
        L.Conv2D(100, 5, strides=2, padding="same", activation="relu"),
        L.MaxPool2D(2, strides=2, padding="same"),
        L.Conv2D(200, 5, strides=2, padding="same", activation="relu"),
        L.MaxPool2D(2, strides=2, padding="same"),
        L.Conv2D(300, 3, padding="same", activation="relu"),
        L.Conv2D(300, 3, padding="same", activation="relu"),
        L.Conv2D(num_classes, 3, padding="same", activation="relu"),
        L.Conv2DTranspose(num_classes, 31, strides=16, padding="same")])
  if name == "unet_small":
    inp = keras.Input((size, size, in_channels))
    x, skips = inp, []
    conv = lambda c: L.Conv2D(c, 3, padding="same", activation="elu", kernel_initializer="he_normal")
    for i, (c, r) in enumerate(zip(_UNET_WIDTHS, _UNET_DROPOUT)):
      if i:
        x = L.MaxPool2D(2)(x)
      x = conv(c)(L.Dropout(r)(conv(c)(x)))
      skips.append(x)
    for c, r, skip in zip(_UNET_WIDTHS[-2::-1], _UNET_DROPOUT[-2::-1], skips[-2::-1]):
      x = L.Concatenate()([L.Conv2DTranspose(c, 2, strides=2, padding="same")(x), skip])
      x = conv(c)(L.Dropout(r)(conv(c)(x)))
    return keras.Model(inp, L.Conv2D(num_classes, 1)(x))
  raise ValueError(name)


def keras_prepare(model: str, batch: int, size: int, *, in_channels=1, num_classes=2, seed=0,
                  **_):
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras
  from jaxseg.bench.train import synthetic_batch
  if keras.backend.backend() != "jax":
    raise RuntimeError(f"Keras runs on {keras.backend.backend()!r}, expected 'jax'")
  keras.utils.set_random_seed(seed)
  net = keras_model(model, size=size, in_channels=in_channels, num_classes=num_classes)
  net.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = synthetic_batch(batch, size, in_channels=in_channels, num_classes=num_classes, seed=seed)

  def step_once():
    return float(net.train_on_batch(x, y))

  info = {"version": keras.__version__, "backend": keras.backend.backend(),
          "params": int(net.count_params())}
  return step_once, info


# ---------------------------------------------------------------- jaxseg


def jaxseg_prepare(model: str, batch: int, size: int, *, in_channels=1, num_classes=2, seed=0,
                   conv_impl="auto", step_kind="product"):
  import jax
  from jaxseg.bench.train import prepare_train
  step_once, info = prepare_train(model, batch_size=batch, image_size=size, conv_impl=conv_impl,
                                  in_channels=in_channels, num_classes=num_classes, seed=seed,
                                  step_kind=step_kind)
  info.update(version=jax.__version__, conv_impl=conv_impl,
              device_kind=jax.devices()[0].device_kind)
  return step_once, info


_PREPARE = {"jaxseg": jaxseg_prepare, "torch": torch_prepare, "keras": keras_prepare}


# ---------------------------------------------------------------- worker and parent


def _status_mb(field: str) -> float | None:
  """A memory figure of this process from /proc/self/status (Linux), in MiB."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def _reset_peak_rss() -> bool:
  """Resets the process's peak RSS (VmHWM, ru_maxrss) to its current RSS (Linux >= 4.0)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def worker(framework: str, model: str, batch: int, size, warmup: int = 1,
           options: dict | None = None) -> None:
  """Build, warm up, then run blocks of steps on request ("run K"), until "quit"."""
  import resource

  def say(kind, obj):
    sys.stdout.write(f"{_TAG}{kind} {json.dumps(obj)}\n")
    sys.stdout.flush()

  t0 = time.perf_counter()
  step_once, info = _PREPARE[framework](model, batch, size, **(options or {}))
  for _ in range(max(warmup, 1) + 1):  # first step compiles (jit / XLA), the rest warm up
    step_once()
  info["setup_seconds"] = time.perf_counter() - t0
  info["setup_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  say("ready", info)
  step_peak, before = None, None
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      break
    times = []
    reset = _reset_peak_rss()
    rss = _status_mb("VmRSS")
    before = rss if before is None else min(before, rss or before)
    for _ in range(int(cmd[1])):
      t = time.perf_counter()
      step_once()
      times.append(time.perf_counter() - t)
    if reset:
      peak = _status_mb("VmHWM")
      step_peak = peak if step_peak is None else max(step_peak, peak or 0)
    say("times", times)
  say("done", {"peak_rss_mb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                  info["setup_peak_rss_mb"]),
               "step_peak_rss_mb": step_peak, "rss_before_steps_mb": before})


class _Worker:
  def __init__(self, framework, model, batch, size, warmup, options):
    env = dict(os.environ)
    if framework == "keras":
      env["KERAS_BACKEND"] = "jax"
    cmd = [sys.executable, "-m", "jaxseg.bench.peers", framework, model, str(batch), size_arg(size),
           str(warmup), json.dumps(options or {})]
    self.framework = framework
    # stderr to a file: an unread pipe fills up and stalls a chatty worker.
    self.stderr = tempfile.TemporaryFile("w+")
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.stderr, text=True, env=env)

  def read(self, kind):
    for line in self.proc.stdout:
      if line.startswith(_TAG):
        got, _, payload = line[len(_TAG):].partition(" ")
        if got != kind:
          raise RuntimeError(f"{self.framework} worker: expected {kind}, got {got}")
        return json.loads(payload)
    self.proc.wait(timeout=60)
    self.stderr.seek(0)
    err = self.stderr.read().strip().splitlines()
    raise RuntimeError(f"{self.framework} worker ended: {err[-1] if err else 'no message'}")

  def send(self, text):
    self.proc.stdin.write(text + "\n")
    self.proc.stdin.flush()

  def close(self):
    try:
      self.send("quit")
      done = self.read("done")
    except (RuntimeError, BrokenPipeError, OSError):
      done = {}
    self.proc.wait(timeout=60)
    return done


def size_arg(size) -> str:
  """An input size on a worker's command line: "256" (square) or "32,64,64"."""
  return ",".join(map(str, size)) if isinstance(size, (tuple, list)) else str(size)


def parse_size(text: str):
  """The inverse of `size_arg`: an int, or a tuple of ints for a spatial shape."""
  parts = tuple(int(t) for t in text.split(","))
  return parts[0] if len(parts) == 1 else parts


def run_interleaved(model: str, *, batch: int, size, steps: int = 5, rounds: int = 3,
                    warmup: int = 1, frameworks=None, conv_impl: str = "auto",
                    step_kind: str = "product", log=None) -> dict:
  """Median seconds per step of each framework, blocks of `steps` taken in turn; ratios to jaxseg.

  ``size`` is an int (square 2-D images) or a spatial shape such as (32, 64, 64);
  ``frameworks`` defaults to those that have the model (`MODEL_FRAMEWORKS`).
  """
  from jaxseg.errors import ConfigError
  if model not in PEER_MODELS:
    raise ConfigError(f"--peers: peers exist for {', '.join(PEER_MODELS)}, not {model!r}")
  frameworks = tuple(frameworks or MODEL_FRAMEWORKS[model])
  log = log or (lambda msg: None)
  options = {fw: ({"conv_impl": conv_impl, "step_kind": step_kind} if fw == "jaxseg" else {})
             for fw in frameworks}
  workers = {}
  try:
    # One at a time: compiling three models at once on a small machine would take the
    # same time overall but makes each setup time meaningless.
    infos = {}
    for fw in frameworks:
      log(f"starting {fw} worker ({model}, batch {batch}, {size_arg(size)})")
      workers[fw] = _Worker(fw, model, batch, size, warmup, options[fw])
      infos[fw] = workers[fw].read("ready")
    times = {fw: [] for fw in frameworks}
    per_round = []
    order = list(frameworks)
    for r in range(rounds):
      block = {}
      for fw in order:
        workers[fw].send(f"run {steps}")
        block[fw] = workers[fw].read("times")
        times[fw] += block[fw]
      per_round.append({fw: statistics.median(t) for fw, t in block.items()})
      log("round %d: %s" % (r + 1, ", ".join(f"{fw} {per_round[-1][fw]:.3f}s" for fw in frameworks)))
      order = order[1:] + order[:1]
    done = {fw: workers.pop(fw).close() for fw in list(workers)}
  finally:
    for w in workers.values():
      w.proc.kill()
  out = {"model": model, "batch_size": batch, "image_size": size, "steps_per_block": steps,
         "rounds": rounds, "frameworks": {},
         # the same architecture everywhere: one parameter count
         "params_match": len({infos[fw].get("params") for fw in frameworks}) == 1}
  for fw in frameworks:
    out["frameworks"][fw] = {"step_seconds": statistics.median(times[fw]),
                             "step_seconds_min": min(times[fw]), "times": times[fw],
                             **infos[fw], **done.get(fw, {})}
  if "jaxseg" in frameworks:
    base = out["frameworks"]["jaxseg"]["step_seconds"]
    for fw in frameworks:
      if fw != "jaxseg":
        out[f"jaxseg_over_{fw}"] = base / out["frameworks"][fw]["step_seconds"]
        # The same ratio per round: its spread shows how much the load moved.
        out[f"jaxseg_over_{fw}_per_round"] = [p["jaxseg"] / p[fw] for p in per_round]
  return out


if __name__ == "__main__":
  fw, model_name, b, s = sys.argv[1:5]
  w = int(sys.argv[5]) if len(sys.argv) > 5 else 1
  opts = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
  worker(fw, model_name, int(b), parse_size(s), w, opts)
