"""`jaxseg summary`: a Keras-style table of a model's layers, output shapes and parameters."""

from jaxseg.registry import CONV_IMPLS, DEFAULT_CONV_IMPL

HELP = "print a model's layers, output shapes and parameter counts (Keras-style summary)"

# Input sizes shown by default: the lab's 256x256 slices, the U-Net paper's
# 572x572 tile, a 64^3 cube for the CPU's 3-D U-Net and nnU-Net's 128^3 patch.
_DEFAULT_SIZE = {"unet": 572, "unet3d_small": 64, "unet3d": 128}


def add_arguments(parser):
  parser.add_argument("--model", default="fcn", help="model name (default: fcn)")
  parser.add_argument("--image-size", type=int, default=None,
                      help="input height = width (and depth for 3-D models); default 256 "
                           "(unet: 572, unet3d_small: 64, unet3d: 128)")
  parser.add_argument("--in-channels", type=int, default=1, help="input channels (default: 1)")
  parser.add_argument("--num-classes", type=int, default=2, help="output classes (default: 2)")
  parser.add_argument("--conv-impl", default=DEFAULT_CONV_IMPL, choices=CONV_IMPLS,
                      help=f"conv implementation of the model (default: {DEFAULT_CONV_IMPL}); the table names "
                           "each conv layer's, and under auto the route it takes")
  parser.add_argument("--platform", default=None, choices=("cpu", "cuda", "rocm", "tpu"),
                      help="the platform whose auto routes are shown (default: this machine's JAX backend)")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object: model, input_shape, layers, total_params")


def run(args):
  import json

  from jaxseg import models
  from jaxseg.errors import ConfigError
  from jaxseg.models.summary import count_params, layer_rows, summarize

  models._check_name(args.model)
  size = args.image_size or _DEFAULT_SIZE.get(args.model, 256)
  if size < 1:
    raise ConfigError(f"--image-size must be >= 1, got {size}")
  kw = {"image_size": size} if args.model == "dense" else {}
  model = models.create(args.model, num_classes=args.num_classes,
                        in_channels=args.in_channels, conv_impl=args.conv_impl, **kw)
  spatial = (size,) * models.spatial_dims(args.model)
  input_shape = (1,) + spatial + (args.in_channels,)
  if args.json:
    rows = layer_rows(model, input_shape, platform=args.platform)
    print(json.dumps({
        "model": args.model,
        "input_shape": [None, *input_shape[1:]],
        "layers": [{"name": r.name, "type": r.type, "output_shape": list(r.output_shape),
                    "params": r.params, **({"route": r.route} if r.route else {})} for r in rows],
        "total_params": count_params(model, input_shape),
    }))
  else:
    print(summarize(model, input_shape, title=args.model, platform=args.platform))
  return 0
