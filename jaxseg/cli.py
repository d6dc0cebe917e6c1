"""The `jaxseg` command.

Each subcommand lives in `jaxseg/commands/<name>.py` and exposes
``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int | None``.
Modules import JAX inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxseg.errors import UserError

COMMANDS = ("train", "evaluate", "predict", "search", "bench", "explain", "summary")


class _Parser(argparse.ArgumentParser):
  """argparse, but a usage error is one line on stderr and exit status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxseg", description=__doc__.splitlines()[0].rstrip("."))
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  sub.required = True
  for name in COMMANDS:
    module = importlib.import_module(f"jaxseg.commands.{name}")
    p = sub.add_parser(name, help=module.HELP, description=module.HELP)
    module.add_arguments(p)
    p.set_defaults(_run=module.run)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    status = args._run(args)
  except UserError as e:
    print(f"jaxseg {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"jaxseg {args.command}: interrupted", file=sys.stderr)
    return 130
  return int(status or 0)


if __name__ == "__main__":
  raise SystemExit(main())
