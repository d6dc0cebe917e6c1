"""`jaxseg bench`: time conv implementations or whole training steps."""

from __future__ import annotations

HELP = ("benchmark the conv implementations on a model's layers (--what conv) or a whole "
        "training step (--what train), optionally against PyTorch and Keras (--peers)")


def _csv(text):
  return tuple(t.strip() for t in text.split(",") if t.strip())


def _ints(text):
  try:
    return tuple(int(t) for t in _csv(text))
  except ValueError:
    import argparse
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def add_arguments(parser):
  parser.add_argument("--what", choices=("conv", "train"), default="train",
                      help="conv: every impl on every conv layer; train: seconds per step")
  parser.add_argument("--model", default=None,
                      help="model name (train: default fcn; conv: default fcn,unet_small)")
  parser.add_argument("--batch-size", type=int, default=None,
                      help="batch size (default 8; 3-D models: 2)")
  parser.add_argument("--image-size", type=int, default=256, help="square input size (default 256)")
  parser.add_argument("--patch-size", type=_ints, default=None, metavar="D,H,W",
                      help="3-D models: the input volume (default 32,64,64)")
  from jaxseg.registry import CONV_IMPLS
  parser.add_argument("--impls", type=_csv, default=None,
                      help=f"comma-separated conv impls, of {', '.join(CONV_IMPLS)} "
                           "(conv: default all; the auto row names each layer's route; "
                           "train: default auto, the models' default)")
  parser.add_argument("--steps", type=int, default=5, help="timed calls/steps, median reported")
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling")
  parser.add_argument("--budget", type=float, default=20.0,
                      help="conv: seconds per measurement before fewer steps are timed")
  parser.add_argument("--gemm-sizes", type=_ints, default=(1024, 1536, 2048),
                      help="conv: square jnp.dot sizes for the GEMM peak (default 1024,1536,2048)")
  parser.add_argument("--peers", action="store_true",
                      help="train: also PyTorch (CPU) and Keras 3 on JAX, interleaved; ratios. "
                           "conv: a PyTorch column per layer (fwd+bwd, in turn with the auto row)")
  parser.add_argument("--rounds", type=int, default=3,
                      help="--peers, --devices: blocks of --steps per framework or layout, taken in turn")
  parser.add_argument("--sweep", action="store_true",
                      help="time and memory vs image size and batch size")
  parser.add_argument("--sizes", type=_ints, default=(64, 128, 256, 512),
                      help="--sweep image sizes (default 64,128,256,512)")
  parser.add_argument("--batches", type=_ints, default=(1, 2, 4, 8, 16, 32),
                      help="--sweep batch sizes (default 1,2,4,8,16,32)")
  parser.add_argument("--layer", default="conv2",
                      help="conv --sweep: layer of the architecture table (default conv2 of fcn)")
  parser.add_argument("--step", choices=("product", "plain"), default="product",
                      help="train: the step of jaxseg.train (product) or a bare one (plain)")
  parser.add_argument("--plot", metavar="FILE", default=None, help="PNG of the sweep")
  parser.add_argument("--devices", type=int, default=1,
                      help="train: time the step on one device and data-parallel on this many, "
                           "in interleaved --rounds (default model unet_small; on a CPU fake devices "
                           "with XLA_FLAGS=--xla_force_host_platform_device_count=N)")
  parser.add_argument("--parallel", type=_csv, default=("pmap", "shard_map", "jit"),
                      help="with --devices > 1: comma-separated layouts (default pmap,shard_map,jit)")
  parser.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")


_PATCH_3D = (32, 64, 64)  # with batch 2: a 3-D U-Net step of a few seconds on 2 CPU cores


def _resolve_sizes(args):
  """Fills in --batch-size and, for a 3-D model's train bench, sets image_size to the patch."""
  from jaxseg import models
  from jaxseg.errors import ConfigError
  names = (args.model or "").split(",") if args.model else []
  three_d = bool(names) and all(n in models.MODELS and models.spatial_dims(n) == 3 for n in names)
  if args.batch_size is None:
    args.batch_size = 2 if three_d else 8
  if args.patch_size is not None:
    if not three_d:
      raise ConfigError("--patch-size: for 3-D models (unet3d_small, unet3d); 2-D models take --image-size")
    if len(args.patch_size) != 3 or min(args.patch_size) < 1:
      raise ConfigError(f"--patch-size: expected D,H,W (three positive integers), got "
                        f"{','.join(map(str, args.patch_size))}")
  if three_d:
    args.image_size = tuple(args.patch_size or _PATCH_3D)
    if args.sweep:
      raise ConfigError("--sweep: 2-D models only")


def _check(args):
  from jaxseg.errors import ConfigError
  _resolve_sizes(args)
  for flag in ("batch_size", "image_size", "steps", "rounds"):
    value = getattr(args, flag)
    if min(value if isinstance(value, tuple) else (value,)) < 1:
      raise ConfigError(f"--{flag.replace('_', '-')}: must be >= 1, got {value}")
  if args.warmup < 0:
    raise ConfigError(f"--warmup: must be >= 0, got {args.warmup}")
  if args.budget <= 0:
    raise ConfigError(f"--budget: must be > 0, got {args.budget}")
  if not args.gemm_sizes or min(args.gemm_sizes) < 1:
    raise ConfigError("--gemm-sizes: need positive integers")
  if args.plot and not args.sweep:
    raise ConfigError("--plot: plots the sweep; add --sweep")
  if args.devices < 1:
    raise ConfigError(f"--devices: must be >= 1, got {args.devices}")
  if args.devices > 1 and (args.what != "train" or args.peers or args.sweep):
    raise ConfigError("--devices: only with --what train, without --peers and --sweep")
  from jaxseg.bench.parallel import LAYOUTS
  bad = [l for l in args.parallel if l not in LAYOUTS]
  if bad or not args.parallel:
    raise ConfigError(f"--parallel: unknown layout {', '.join(bad) or '(none)'}; choose from {', '.join(LAYOUTS)}")


def run(args):
  import json
  _check(args)
  if args.peers:
    from jaxseg.bench import peers
    peers.require_peers()  # before any slow work: a missing peer is one line, exit 2
  from jaxseg.bench import report
  if args.devices > 1:
    from jaxseg.bench import parallel
    result = parallel.run(args)
  elif args.what == "conv":
    result = report.run_conv(args)
  else:
    result = report.run_train(args)
  if args.json:
    print(json.dumps(result, default=float))
  return 1 if result.get("wrong") else 0
