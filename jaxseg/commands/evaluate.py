"""`jaxseg evaluate` (not implemented yet)."""

HELP = "evaluate (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'evaluate' is not implemented yet")
