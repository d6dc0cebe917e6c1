"""`jaxseg predict` (not implemented yet)."""

HELP = "predict (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'predict' is not implemented yet")
