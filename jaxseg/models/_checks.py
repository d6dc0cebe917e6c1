"""Input checks shared by the models (shapes are static, so plain Python)."""

from __future__ import annotations

from jaxseg.errors import DataError


def check_input(x, *, name: str, in_channels: int, spatial_dims: int = 2, multiple: int = 1):
  """Raises DataError unless x is (N, *spatial, in_channels) with spatial sizes % multiple == 0."""
  if x.ndim != spatial_dims + 2:
    raise DataError(f"model {name!r} takes {spatial_dims + 2}-D input (N, {'D, ' if spatial_dims == 3 else ''}"
                    f"H, W, C), got shape {tuple(x.shape)}")
  if x.shape[-1] != in_channels:
    raise DataError(f"model {name!r} was built for {in_channels} input channel(s), "
                    f"got {x.shape[-1]} (shape {tuple(x.shape)})")
  bad = [s for s in x.shape[1:-1] if s % multiple]
  if bad:
    raise DataError(f"model {name!r} needs spatial sizes that are multiples of {multiple}, "
                    f"got {tuple(x.shape[1:-1])} (pad the input first)")
