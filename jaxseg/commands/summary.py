"""`jaxseg summary` (not implemented yet)."""

HELP = "summary (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'summary' is not implemented yet")
