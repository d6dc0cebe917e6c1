"""`jaxseg train` (not implemented yet)."""

HELP = "train (not implemented yet)"


def add_arguments(parser):
  del parser


def run(args):
  del args
  from jaxseg.errors import UserError
  raise UserError("'train' is not implemented yet")
