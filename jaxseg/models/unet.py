"""U-Nets: Ronneberger et al. 2015, the DSB-2018 starter U-Net, and 3-D U-Nets for a CPU and a GPU."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn

from jaxseg.errors import ConfigError
from jaxseg.models import layers
from jaxseg.models._checks import check_input

_ACTIVATIONS = {"relu": nn.relu, "elu": layers.elu,
                "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.01)}
_NORMS = ("none", "instance")


class UNet(nn.Module):
  """A U-Net on 2-D (N,H,W,C) or 3-D (N,D,H,W,C) inputs.

  Contracting path: at each of ``depth`` levels two 3x3 convs (widths
  ``base * 2**level``, capped at ``max_features`` when given) then a 2x2
  max-pool; a bottom level of two convs (``base * 2**depth``, capped).
  Expanding path: a 2x2 stride-2 transposed conv to the level's width,
  concatenation with the contracting path's map (centre cropped when the
  convs are unpadded), two 3x3 convs. A 1x1 conv gives ``num_classes``
  logits.

  ``padding="valid"`` is the paper's network: unpadded convs, 572x572 in,
  388x388 out, skip maps cropped. ``padding="same"`` keeps the input size
  (which must then be a multiple of ``2**depth``).

  ``dropout`` holds one rate per level (``depth + 1`` values, top to bottom);
  a dropout layer follows the first conv of each level, the expanding path
  reusing the rate of its level, as in the DSB-2018 starter. Dropout is active
  only for ``train=True`` and then needs ``rngs={"dropout": key}``.

  ``norm="instance"`` puts an instance norm (per example and channel over the
  spatial axes, eps 1e-5, learned scale and bias) between each 3x3 conv and
  its activation, as nnU-Net does. ``model_name`` is the name the model was
  asked for by (errors say it).
  """
  num_classes: int = 2
  in_channels: int = 1
  conv_impl: str = "auto"
  conv_policy: Any = None  # a jaxseg.ops.ConvPolicy for conv_impl="auto" (None: the default)
  base: int = 64
  depth: int = 4
  padding: str = "valid"
  spatial_dims: int = 2
  activation: str = "relu"
  dropout: Sequence[float] = ()
  kernel_init: layers.Initializer = layers.he_normal
  up_kernel_init: layers.Initializer = layers.glorot_uniform
  head_kernel_init: layers.Initializer = layers.glorot_uniform
  norm: str = "none"
  max_features: int | None = None
  model_name: str = "unet"

  def features(self, level: int) -> int:
    """Channels of the convs at ``level`` (0 = full resolution, ``depth`` = bottom)."""
    f = self.base * 2 ** level
    return f if self.max_features is None else min(f, self.max_features)

  def _check_config(self):
    if self.padding.upper() not in ("SAME", "VALID"):
      raise ConfigError(f"unet padding must be 'same' or 'valid', got {self.padding!r}")
    if self.activation not in _ACTIVATIONS:
      raise ConfigError(f"unet activation must be one of {', '.join(_ACTIVATIONS)}, "
                        f"got {self.activation!r}")
    if self.dropout and len(self.dropout) != self.depth + 1:
      raise ConfigError(f"unet dropout needs depth + 1 = {self.depth + 1} rates, "
                        f"got {len(self.dropout)}")
    if self.spatial_dims not in (2, 3):
      raise ConfigError(f"unet spatial_dims must be 2 or 3, got {self.spatial_dims}")
    if self.norm not in _NORMS:
      raise ConfigError(f"unet norm must be one of {', '.join(_NORMS)}, got {self.norm!r}")
    if self.base < 1 or self.depth < 0:
      raise ConfigError(f"unet needs base >= 1 and depth >= 0, got base={self.base}, depth={self.depth}")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self._check_config()
    padding = self.padding.upper()
    nd = self.spatial_dims
    check_input(x, name=self.model_name, in_channels=self.in_channels, spatial_dims=nd,
                multiple=2 ** self.depth if padding == "SAME" else 1)
    act = _ACTIVATIONS[self.activation]
    rates = tuple(self.dropout) or (0.0,) * (self.depth + 1)

    def block(x, features, rate, prefix):
      conv = functools.partial(layers.Conv, features, (3,) * nd, padding=padding,
                               conv_impl=self.conv_impl, conv_policy=self.conv_policy,
                               kernel_init=self.kernel_init)

      def norm(x, suffix):
        if self.norm == "instance":
          return layers.InstanceNorm(name=f"{prefix}_norm{suffix}")(x)
        return x

      x = act(norm(conv(name=f"{prefix}_conv1")(x), 1))
      if rate:
        x = layers.Dropout(rate, name=f"{prefix}_dropout")(x, train)
      return act(norm(conv(name=f"{prefix}_conv2")(x), 2))

    skips = []
    for level in range(self.depth):
      x = block(x, self.features(level), rates[level], f"down{level}")
      skips.append(x)
      x = layers.MaxPool(2, conv_impl=self.conv_impl, name=f"down{level}_pool")(x)
    x = block(x, self.features(self.depth), rates[self.depth], "bottom")
    for level in reversed(range(self.depth)):
      features = self.features(level)
      x = layers.ConvTranspose(features, (2,) * nd, strides=2, padding="SAME",
                               conv_impl=self.conv_impl, conv_policy=self.conv_policy,
                               kernel_init=self.up_kernel_init, name=f"up{level}_upconv")(x)
      x = layers.CenterCropConcat(name=f"up{level}_concat")(x, skips[level])
      x = block(x, features, rates[level], f"up{level}")
    return layers.Conv(self.num_classes, (1,) * nd, conv_impl=self.conv_impl, conv_policy=self.conv_policy,
                       kernel_init=self.head_kernel_init, name="head")(x)


def unet_small(**kw) -> UNet:
  """The Kaggle DSB-2018 "Keras U-Net starter" of 004_*.txt.

  Filters 16-32-64-128-256, 3x3 ELU convs with he_normal init and SAME
  padding, dropout 0.1/0.1/0.2/0.2/0.3 (and 0.2/0.2/0.1/0.1 going up),
  2x2 max-pool, 2x2 stride-2 transposed convs, skip concatenation, a 1x1
  head: 1,941,105 parameters for 3 input channels and 1 output. The
  starter's final sigmoid is left to the loss (a single logit means binary),
  and so is its ``x / 255`` input scaling (jaxseg normalises in the data).
  """
  kw = {"base": 16, "depth": 4, "padding": "same", "activation": "elu",
        "dropout": (0.1, 0.1, 0.2, 0.2, 0.3), **kw}
  return UNet(**kw)


def unet(**kw) -> UNet:
  """Ronneberger et al. 2015: base 64 (64...1024), unpadded convs (572 -> 388), relu."""
  return UNet(**{"base": 64, "depth": 4, "padding": "valid", **kw})


def unet3d_small(**kw) -> UNet:
  """A 3-D U-Net that trains on a 2-core CPU in minutes: nnU-Net's blocks, scaled down.

  Base 16, depth 3 (16-32-64-128 channels), 3x3x3 convs each followed by an
  instance norm and a leaky ReLU (slope 0.01), 2x2x2 max-pool, 2x2x2 stride-2
  transposed convs, SAME padding: inputs (N, D, H, W, C) with D, H, W
  multiples of 8. 1,401,986 parameters for 1 input channel and 2 classes
  (tests/models/test_unet3d.py counts them by hand).
  """
  kw = {"base": 16, "depth": 3, "padding": "same", "spatial_dims": 3, "norm": "instance",
        "activation": "leaky_relu", "model_name": "unet3d_small", **kw}
  return UNet(**kw)


def unet3d(**kw) -> UNet:
  """nnU-Net's 3-D full-resolution U-Net (Isensee et al. 2021), for GPUs.

  As nnU-Net's default plan for 128^3 patches: six resolution stages with
  32-64-128-256-320-320 channels (base 32, doubled per stage, capped at 320),
  two 3x3x3 conv + instance norm + leaky ReLU (0.01) per stage, 2x2x2
  stride-2 transposed convs up, skip concatenation, a 1x1x1 head; D, H, W
  multiples of 32. Kept simpler than nnU-Net: 2x2x2 max-pooling instead of
  stride-2 convs, isotropic pooling at every stage (nnU-Net pools anisotropic
  data in-plane only until the spacing is near isotropic), no deep supervision.
  """
  kw = {"base": 32, "depth": 5, "max_features": 320, "padding": "same", "spatial_dims": 3,
        "norm": "instance", "activation": "leaky_relu", "model_name": "unet3d", **kw}
  return UNet(**kw)
