"""Segmentation models as Flax linen modules.

`create(name, ...)` returns a module whose ``init(rng, x)`` gives
``{"params": ...}`` and whose ``apply(variables, x, train=False,
rngs={"dropout": key})`` gives logits ``(N, *spatial, num_classes)``. Every
convolution and transposed convolution goes through `jaxseg.ops` with the
module's ``conv_impl`` (default "auto"), so any model runs on any implementation.

Models (see each module for the seed it reproduces):

- ``dense``: the lab's Task 1 (keeps its softmax-over-all-outputs failure);
- ``fcn``, ``fcn_deep``: the lab's Task 2/3 FCN and the parameter-search variant;
- ``cnn3``: the three-conv net of the atrial lecture;
- ``unet_small``: the DSB-2018 starter U-Net;
- ``unet``: Ronneberger et al. 2015 (``padding="valid"`` by default, or ``"same"``);
- ``unet3d_small``: a 3-D U-Net on volumes (N, D, H, W, C) that trains on a CPU;
- ``unet3d``: nnU-Net's 3-D full-resolution U-Net, for GPUs.

`spatial_dims(name)` says whether a model takes images (2) or volumes (3).
"""

from __future__ import annotations

import functools

from jaxseg.errors import ConfigError
from jaxseg.models import layers
from jaxseg.models.cnn3 import CNN3
from jaxseg.models.dense import DenseNet
from jaxseg.models.fcn import FCN
from jaxseg.models.summary import summarize
from jaxseg.models.unet import UNet, unet, unet3d, unet3d_small, unet_small

_FACTORIES = {
    "dense": DenseNet,
    "fcn": FCN,
    "fcn_deep": functools.partial(FCN, extra_convs=1),
    "cnn3": CNN3,
    "unet_small": unet_small,
    "unet": unet,
    "unet3d_small": unet3d_small,
    "unet3d": unet3d,
}

MODELS = tuple(_FACTORIES)


def _check_name(name: str) -> None:
  if name not in _FACTORIES:
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def create(name: str, *, num_classes: int = 2, in_channels: int = 1, conv_impl: str = "auto", **kw):
  """Builds model ``name``; extra keywords go to the model (e.g. ``base=8``, ``image_size=32``,
  ``conv_policy=jaxseg.ops.ConvPolicy(...)`` for the rules of ``conv_impl="auto"``).

  ``conv_impl`` is one of `jaxseg.ops.CONV_IMPLS`; "auto" (the default) is the
  fastest tested route on the platform the model is lowered for, "lax" plain
  XLA (its convs and its autodiff, no custom call).

  Raises ConfigError for an unknown name, conv_impl or keyword.
  """
  _check_name(name)
  layers.check_conv_impl(conv_impl)
  if num_classes < 1 or in_channels < 1:
    raise ConfigError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
  try:
    return _FACTORIES[name](num_classes=num_classes, in_channels=in_channels,
                            conv_impl=conv_impl, **{"model_name": name, **kw})
  except TypeError as e:
    raise ConfigError(f"model {name!r}: bad option ({e})") from None


def size_multiple(name: str, **kw) -> int:
  """Input height/width (and depth) must be a multiple of this (data is padded to it).

  ``dense`` takes exactly ``image_size`` when given (else 1: it takes the
  size it is initialised with, and only that size afterwards). The valid-padding
  ``unet`` also returns 16, but its output is smaller than its input
  (572 -> 388): use ``padding="same"`` to get logits the size of the labels.
  """
  _check_name(name)
  if name == "dense":
    return int(kw.get("image_size") or 1)
  if name == "cnn3":
    return 1
  if name.startswith("unet"):
    return 2 ** int(kw.get("depth", _FACTORIES[name]().depth))
  return 16


def spatial_dims(name: str, **kw) -> int:
  """2 for a model of images (N, H, W, C), 3 for a model of volumes (N, D, H, W, C)."""
  _check_name(name)
  if name.startswith("unet"):
    return int(kw.get("spatial_dims", _FACTORIES[name]().spatial_dims))
  return 2


__all__ = ["MODELS", "create", "size_multiple", "spatial_dims", "summarize", "DenseNet", "FCN",
           "CNN3", "UNet"]
