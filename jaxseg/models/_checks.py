"""Input checks shared by the models (shapes are static, so plain Python)."""

from __future__ import annotations

from jaxseg.errors import DataError

_KIND = {2: "2-D model: it takes images (N, H, W, C)", 3: "3-D model: it takes volumes (N, D, H, W, C)"}
_HINT = {2: "give 2-D images or slices, or use a 3-D model (unet3d_small, unet3d)",
         3: "give volumes, or use a 2-D model (fcn, unet_small, ...)"}


def check_input(x, *, name: str, in_channels: int, spatial_dims: int = 2, multiple: int = 1):
  """Raises DataError unless x is (N, *spatial, in_channels) with spatial sizes % multiple == 0.

  ``name`` is the model's name as the user asked for it (`jaxseg.models.create`
  passes it), so a 2-D model given volumes, or the reverse, says which model
  the user chose in one line.
  """
  if x.ndim != spatial_dims + 2:
    got = {4: " (2-D images)", 5: " (3-D volumes)"}.get(x.ndim, "")
    raise DataError(f"model {name!r} is a {_KIND[spatial_dims]}, got shape {tuple(x.shape)}{got}; "
                    f"{_HINT[spatial_dims]}")
  if x.shape[-1] != in_channels:
    raise DataError(f"model {name!r} was built for {in_channels} input channel(s), "
                    f"got {x.shape[-1]} (shape {tuple(x.shape)})")
  bad = [s for s in x.shape[1:-1] if s % multiple]
  if bad:
    raise DataError(f"model {name!r} needs spatial sizes that are multiples of {multiple}, "
                    f"got {tuple(x.shape[1:-1])} (pad the input first)")
