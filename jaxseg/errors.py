"""Errors a user can cause.

Anything raised as :class:`UserError` (or a subclass) is reported by the
`jaxseg` command as one line on stderr with exit status 2, no traceback.
Library code raises these for bad paths, corrupt files, shape mismatches,
label values outside the classes and unknown names; programming errors stay
ordinary exceptions.
"""


class UserError(ValueError):
  """An error caused by the user's input (path, file, flag, name)."""


class DataError(UserError):
  """A data file or data spec that cannot be used."""


class ConfigError(UserError):
  """A flag or configuration value that cannot be used."""


class DivergenceError(RuntimeError):
  """Training produced a non-finite loss; the last good checkpoint is kept."""
