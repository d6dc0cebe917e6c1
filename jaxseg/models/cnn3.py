"""The three-conv network of the atrial-segmentation lecture (000_*.txt)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxseg.models import layers
from jaxseg.models._checks import check_input


class CNN3(nn.Module):
  """conv 3x3 8 relu -> conv 3x3 16 relu -> conv 3x3 num_classes, all SAME.

  The lecture's tflearn net (640x640x1 -> 8 -> 16 -> 2 maps) with its final
  softmax left to the loss: this returns logits. No pooling, so any input
  size works.
  """
  num_classes: int = 2
  in_channels: int = 1
  conv_impl: str = "auto"
  conv_policy: Any = None  # a jaxseg.ops.ConvPolicy for conv_impl="auto" (None: the default)
  model_name: str = "cnn3"  # the registry name, for error messages
  features: tuple[int, ...] = (8, 16)

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    check_input(x, name=self.model_name, in_channels=self.in_channels)
    for i, f in enumerate(self.features):
      x = nn.relu(layers.Conv(f, (3, 3), conv_impl=self.conv_impl, conv_policy=self.conv_policy,
                              name=f"conv{i + 1}")(x))
    return layers.Conv(self.num_classes, (3, 3), conv_impl=self.conv_impl, conv_policy=self.conv_policy,
                       name=f"conv{len(self.features) + 1}")(x)
