"""`jaxseg explain`: convolution as a sparse matrix, y = W x, and the transpose W^T.

The flags are checked here; `jaxseg.teach` computes the views and
`jaxseg.commands.explain_output` prints and draws them.
"""

from __future__ import annotations

from jaxseg.errors import UserError

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


# ---------------------------------------------------------------- flags -> Example
# The checks below name the flag at fault; `jaxseg.teach` builds and computes
# the example from the values. NumPy and teach are imported inside the
# functions, so that `jaxseg explain --help` imports neither.

def _parse_numbers(text: str, flag: str):
  """'1,0,-1;2,0,-2' -> 2-D float array (rows split by ';', entries by ',')."""
  import numpy as np
  rows = [r for r in text.replace(" ", "").split(";") if r != ""]
  try:
    values = [[float(v) for v in r.split(",")] for r in rows]
  except ValueError:
    raise UserError(f"{flag} {text!r}: not a name or a literal like '1,0,-1;2,0,-2'") from None
  if not values or len({len(r) for r in values}) != 1:
    raise UserError(f"{flag} {text!r}: rows must be non-empty and of equal length")
  a = np.array(values, np.float32)
  if not np.all(np.isfinite(a)):
    raise UserError(f"{flag} {text!r}: entries must be finite numbers")
  return a


def parse_kernel(spec: str, *, seed: int = 0):
  """--kernel: a name of `teach.KERNELS`, 'random' (integers in [-2, 2]) or a literal 'a,b;c,d'."""
  from jaxseg import teach
  if spec in teach.KERNELS:
    return teach.KERNELS[spec].copy()
  if spec == "random":
    return teach.random_kernel(seed)
  if not any(c.isdigit() for c in spec):
    names = ", ".join(list(teach.KERNELS) + ["random"])
    raise UserError(f"--kernel {spec!r}: unknown name (known: {names}) and not a literal like '1,0,-1;2,0,-2'")
  return _parse_numbers(spec, "--kernel")


def parse_ints(text: str | None, flag: str, *, n: int = 2, minimum: int = 1) -> tuple[int, ...] | None:
  """'3' -> (3, 3); '3,4' -> (3, 4); checks the lower bound."""
  if text is None:
    return None
  try:
    vals = tuple(int(v) for v in str(text).split(","))
  except ValueError:
    raise UserError(f"{flag} {text!r}: expected an integer or {n} integers separated by ','") from None
  if len(vals) == 1:
    vals = vals * n
  if len(vals) != n:
    raise UserError(f"{flag} {text!r}: expected 1 or {n} integers, got {len(vals)}")
  if min(vals) < minimum:
    raise UserError(f"{flag} {text!r}: values must be >= {minimum}")
  return vals


def parse_padding(text: str):
  """--padding: 'SAME', 'VALID', 'P' (all sides), 'PH,PW' or 'TOP,BOTTOM,LEFT,RIGHT'."""
  up = text.strip().upper()
  if up in ("SAME", "VALID"):
    return up
  try:
    vals = [int(v) for v in text.split(",")]
  except ValueError:
    raise UserError(f"--padding {text!r}: expected SAME, VALID, P, PH,PW or T,B,L,R") from None
  if min(vals) < 0:
    raise UserError(f"--padding {text!r}: padding must be >= 0")
  if len(vals) == 1:
    return ((vals[0], vals[0]), (vals[0], vals[0]))
  if len(vals) == 2:
    return ((vals[0], vals[0]), (vals[1], vals[1]))
  if len(vals) == 4:
    return ((vals[0], vals[1]), (vals[2], vals[3]))
  raise UserError(f"--padding {text!r}: expected 1, 2 or 4 integers")


def parse_input(spec: str, size: tuple[int, int] | None, channels: int, *, seed: int = 0):
  """--input: a name of `teach.INPUTS` ('seed' only at 5x5x1) or a one-channel literal -> (1, H, W, C)."""
  from jaxseg import teach
  if spec == "seed" and (size not in (None, (5, 5)) or channels != 1):
    raise UserError("--input seed is the 5x5 one-channel image of the worked example; "
                    "use --input random or ramp for other sizes/channels")
  if spec in teach.INPUTS:
    return teach.named_input(spec, size, channels, seed=seed)
  if not any(c.isdigit() for c in spec):
    raise UserError(f"--input {spec!r}: unknown name (known: {', '.join(teach.INPUTS)}) and not a literal like '1,2;3,4'")
  x = _parse_numbers(spec, "--input")
  if size is not None and tuple(size) != x.shape:
    raise UserError(f"--input: the literal is {x.shape[0]}x{x.shape[1]} but --size asks for {size[0]}x{size[1]}")
  if channels != 1:
    raise UserError("--input: a literal input has one channel; use --in-channels 1")
  return x[None, :, :, None]


def example_from_flags(*, size=None, kernel="seed", input=None, stride="1", padding="VALID",
                       dilation="1", in_channels=1, out_channels=1, seed=0):
  """Checks the flags of `jaxseg explain` (as strings, like argparse gives them) and returns
  the `teach.Example` they describe; UserError naming the flag otherwise."""
  from jaxseg import teach
  if in_channels < 1 or out_channels < 1:
    raise UserError("--in-channels/--out-channels must be >= 1")
  size = parse_ints(size, "--size")
  if input is None:
    input = "seed" if size in (None, (5, 5)) and in_channels == 1 else "random"
  k = parse_kernel(kernel, seed=seed)
  x = parse_input(input, size, in_channels, seed=seed)
  ex = teach.make_example(x, k, out_channels=out_channels, stride=parse_ints(stride, "--stride"),
                          padding=parse_padding(padding), dilation=parse_ints(dilation, "--dilation"))
  oh, ow = ex.out_hw
  if oh < 1 or ow < 1:
    kd = [(kk - 1) * d + 1 for kk, d in zip(k.shape, ex.dilation)]
    raise UserError(f"--size {x.shape[1]}x{x.shape[2]} with a {kd[0]}x{kd[1]} (dilated) kernel and "
                    f"padding {padding}: the output would be empty ({oh}x{ow})")
  if ex.dense_entries > teach.MAX_DENSE_ENTRIES:
    raise UserError(f"--size {x.shape[1]}x{x.shape[2]}: W would have {ex.dense_entries:,} entries, more than "
                    f"the {teach.MAX_DENSE_ENTRIES:,} explain draws densely; use a smaller size or fewer channels")
  return ex


def ensure_dir(path: str) -> None:
  """Creates --out (UserError naming it if that fails)."""
  import os
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"--out {path}: cannot create the directory ({e.strerror})") from None


def run(args):
  import json
  from jaxseg import teach
  from jaxseg.commands import explain_output
  ex = example_from_flags(size=args.size, kernel=args.kernel, input=args.input,
                          stride=args.stride, padding=args.padding, dilation=args.dilation,
                          in_channels=args.in_channels, out_channels=args.out_channels, seed=args.seed)
  if args.out:
    ensure_dir(args.out)
  results = teach.explain(ex)
  print(explain_output.report(ex, results))
  if args.out:
    paths = explain_output.figures(ex, results, args.out)
    print("\nFigures: " + ", ".join(paths))
  if args.json:
    print(json.dumps(explain_output.summary(ex, results)))
  return 0
