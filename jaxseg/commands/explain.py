"""`jaxseg explain` (not implemented yet)."""

HELP = "explain (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'explain' is not implemented yet")
