"""The `jaxseg` command.

Each subcommand lives in `jaxseg/commands/<name>.py` and exposes
``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int | None``.
Only the chosen subcommand's module is imported (and it imports JAX inside
``run``), so that ``jaxseg --help`` and ``jaxseg <cmd> --help`` stay fast.
Other modules there (``explain_output``) are helpers a command imports in ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxseg.errors import UserError

# name -> one line for `jaxseg --help`; the full HELP of each module is the
# description of `jaxseg <name> --help`. Kept here so that listing the
# commands imports none of them.
SUMMARIES = {
    "train": "train a segmentation model (default: the lab's FCN on synthetic cardiac MRI)",
    "evaluate": "evaluate a trained run on its validation data (or on --data)",
    "predict": "segment an image or volume with a trained run, keeping its geometry",
    "search": "grid or random search over the lab's training knobs",
    "bench": "benchmark conv implementations or whole training steps",
    "explain": "show a convolution as a sparse matrix: y = W x and W^T y",
    "summary": "print a model's layers, output shapes and parameter counts",
}
COMMANDS = tuple(SUMMARIES)
# The subcommands that compute with JAX: `console_main` prepares their environment.
COMPUTING = ("train", "evaluate", "predict", "search", "bench")


class _Parser(argparse.ArgumentParser):
  """argparse, but a usage error is one line on stderr and exit status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _chosen(argv: list[str]) -> str | None:
  """The subcommand argparse will pick: the first argument not starting with '-'
  (the top-level parser has no options that take a value)."""
  return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None, *, all_commands: bool = False) -> argparse.ArgumentParser:
  """The parser; only `command`'s arguments (or every command's) are added."""
  parser = _Parser(prog="jaxseg", description=__doc__.splitlines()[0].rstrip("."))
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  sub.required = True
  for name in COMMANDS:
    p = sub.add_parser(name, help=SUMMARIES[name], description=SUMMARIES[name])
    if all_commands or name == command:
      module = importlib.import_module(f"jaxseg.commands.{name}")
      p.description = module.HELP
      module.add_arguments(p)
      p.set_defaults(_run=module.run)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser(_chosen(argv))
  args = parser.parse_args(argv)
  try:
    status = args._run(args)
  except UserError as e:
    print(f"jaxseg {args.command}: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    if e.filename is None:
      raise
    # A path the system refuses (cannot create --workdir, permission denied,
    # disk full): the user's to fix, so one line naming the path.
    print(f"jaxseg {args.command}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"jaxseg {args.command}: interrupted", file=sys.stderr)
    return 130
  return int(status or 0)


def console_main() -> int:
  """The `jaxseg` executable (`python -m jaxseg` too).

  A computing subcommand first adds jaxseg's XLA:CPU flags to ``XLA_FLAGS``
  (`jaxseg.xla_flags`; ``JAXSEG_XLA_FLAGS=0`` turns that off), then
  re-executes itself with glibc's huge-page tunable (`jaxseg.hugepages`;
  ``JAXSEG_HUGEPAGES=0`` turns that off). Both happen before JAX is imported.
  """
  from jaxseg import hugepages, xla_flags
  if _chosen(sys.argv[1:]) in COMPUTING:
    xla_flags.apply()
    hugepages.reexec_if_needed(sys.argv)
  return main()


if __name__ == "__main__":
  raise SystemExit(console_main())
