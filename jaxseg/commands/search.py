"""`jaxseg search` (not implemented yet)."""

HELP = "search (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'search' is not implemented yet")
