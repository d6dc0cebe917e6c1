"""The lab's Task 2/3 fully convolutional network, and its parameter-search variant."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxseg.models import layers
from jaxseg.models._checks import check_input


class FCN(nn.Module):
  """The DLI lab's FCN (after Tran 2016), layer for layer.

  ======================  ====================================  ==========
  layer (Keras name)      op                                    params
  ======================  ====================================  ==========
  Conv1                   conv 5x5 stride 2, 100, relu, SAME    2,600
  max_pooling2d           max-pool 2x2 stride 2, SAME           0
  conv2d                  conv 5x5 stride 2, 200, relu, SAME    500,200
  max_pooling2d_1         max-pool 2x2 stride 2, SAME           0
  conv2d_1, conv2d_2      conv 3x3, 300, relu, SAME (x2)        540,300 + 810,300
  conv2d_3                conv 3x3, num_classes, relu, SAME     5,402
  conv2d_transpose        transposed conv 31x31 stride 16 SAME  3,846
  ======================  ====================================  ==========

  1,862,648 parameters for 1 input channel and 2 classes. The relu on the
  class-score conv is the lab's (it clips the scores before upsampling).
  The input's height and width must be multiples of 16: the net goes down by
  16 and the transposed conv goes back up by exactly 16. ``extra_convs``
  adds more 3x3x300 relu convs (``fcn_deep`` has one: the lab's
  parameter-search model).
  """
  num_classes: int = 2
  in_channels: int = 1
  conv_impl: str = "auto"
  conv_policy: Any = None  # a jaxseg.ops.ConvPolicy for conv_impl="auto" (None: the default)
  model_name: str = "fcn"  # the registry name, for error messages
  extra_convs: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    check_input(x, name=self.model_name, in_channels=self.in_channels, multiple=16)
    conv = lambda f, k, s, name: layers.Conv(f, (k, k), strides=s, padding="SAME", conv_impl=self.conv_impl,
                                             conv_policy=self.conv_policy, name=name)
    x = nn.relu(conv(100, 5, 2, "Conv1")(x))
    x = layers.MaxPool(2, 2, "SAME", conv_impl=self.conv_impl, name="max_pooling2d")(x)
    x = nn.relu(conv(200, 5, 2, "conv2d")(x))
    x = layers.MaxPool(2, 2, "SAME", conv_impl=self.conv_impl, name="max_pooling2d_1")(x)
    n = 1
    for _ in range(2 + self.extra_convs):
      x = nn.relu(conv(300, 3, 1, f"conv2d_{n}")(x))
      n += 1
    x = nn.relu(conv(self.num_classes, 3, 1, f"conv2d_{n}")(x))
    return layers.ConvTranspose(self.num_classes, (31, 31), strides=16, padding="SAME",
                                conv_impl=self.conv_impl, conv_policy=self.conv_policy,
                                name="conv2d_transpose")(x)
