"""`jaxseg explain`: convolution as a sparse matrix, y = W x, and the transpose W^T."""

HELP = ("show a convolution as a sparse matrix: y = W x next to the direct sum and lax.conv, "
        "W^T y next to conv_transpose and the gradient, and the im2col view")

_EPILOG = """\
With no flags: the worked example of the 000_* lecture (5x5 input, 3x3 filter, VALID).
Kernels: seed, sobel_x, sobel_y, smooth ([1,2,1]/4), diff ([1,0,-1]), random, or a literal
such as "1,0,-1;2,0,-2;1,0,-1" (rows split by ';'). With several channels, the pair
(in i, out o) uses the kernel times (1 + i*Cout + o).
Inputs: seed (the 5x5 example), ramp (1, 2, 3, ...), random (integers in [-2, 2], --seed),
or a literal such as "1,2,3;4,5,6;7,8,9".
Padding: SAME, VALID, P (all sides), PH,PW or TOP,BOTTOM,LEFT,RIGHT.
A literal that starts with '-' needs '=': --kernel=-1,0,1
Examples: jaxseg explain --padding SAME --stride 2 --out figs
          jaxseg explain --size 3 --input ramp --kernel sobel_y   (the 002_* example: -24)
"""


def add_arguments(parser):
  import argparse
  parser.formatter_class = argparse.RawDescriptionHelpFormatter
  parser.epilog = _EPILOG
  parser.add_argument("--size", default=None, metavar="H[,W]",
                      help="input height and width (default 5x5)")
  parser.add_argument("--kernel", default="seed", metavar="NAME|LITERAL",
                      help="the filter (default: seed, the 000_* example)")
  parser.add_argument("--input", default=None, metavar="NAME|LITERAL",
                      help="the input image (default: seed for 5x5x1, else random)")
  parser.add_argument("--stride", default="1", metavar="S[,S]", help="stride (default 1)")
  parser.add_argument("--padding", default="VALID", metavar="PAD",
                      help="SAME, VALID or explicit (default VALID, as in the worked example)")
  parser.add_argument("--dilation", default="1", metavar="D[,D]", help="kernel dilation (default 1)")
  parser.add_argument("--in-channels", type=int, default=1, metavar="C", help="input channels (default 1)")
  parser.add_argument("--out-channels", type=int, default=1, metavar="C", help="output channels (default 1)")
  parser.add_argument("--seed", type=int, default=0, help="seed of --input/--kernel random (default 0)")
  parser.add_argument("--out", default=None, metavar="DIR",
                      help="write PNG figures: w_sparsity.png, im2col.png, shapes.png")
  parser.add_argument("--json", action="store_true",
                      help="print a final JSON line with y, W's shape and nnz")


def run(args):
  import json
  from jaxseg import teach
  ex = teach.build_example(size=args.size, kernel=args.kernel, input=args.input,
                           stride=args.stride, padding=args.padding, dilation=args.dilation,
                           in_channels=args.in_channels, out_channels=args.out_channels,
                           seed=args.seed)
  if args.out:
    teach.ensure_dir(args.out)
  results = teach.explain(ex)
  print(teach.report(ex, results))
  if args.out:
    paths = teach.figures(ex, results, args.out)
    print("\nFigures: " + ", ".join(paths))
  if args.json:
    print(json.dumps(teach.summary(ex, results)))
  return 0
