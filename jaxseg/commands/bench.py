"""`jaxseg bench` (not implemented yet)."""

HELP = "bench (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'bench' is not implemented yet")
