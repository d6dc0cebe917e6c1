"""The lab's Task 1 network: one hidden fully connected layer."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxseg.models import layers
from jaxseg.models._checks import check_input
from jaxseg.errors import DataError


class DenseNet(nn.Module):
  """Flatten -> Dense(64, relu) -> Dense(S*S*C) -> softmax over ALL outputs -> reshape.

  This is the DLI lab's Task 1 model exactly (12,714,048 parameters at
  256x256x1 with 2 classes)::

      Flatten(input_shape=[256, 256, 1]),
      Dense(64, activation='relu'),
      Dense(256*256*2, activation='softmax'),
      Reshape((256, 256, 2))

  and it keeps the lab's mistake on purpose: the softmax runs over all
  S*S*C outputs at once, not over the classes of each pixel, and the lab then
  fed those probabilities to a loss built with ``from_logits=True``. So the
  "logits" this model returns are those probabilities, each about
  1 / (S*S*C). A per-pixel softmax of two such tiny numbers is ~(0.5, 0.5)
  whatever the weights, the cross-entropy gradient nearly vanishes, and
  training settles on one constant prediction: high pixel accuracy (the
  background is ~98% of pixels) with a Dice near 0, as in the lab.

  ``image_size=None`` (the default) takes the size of the input the model is
  initialised with; the weights then fix it (the lab's was 256).
  ``lab_softmax=False`` returns the last Dense layer's raw outputs instead
  (the fixed model; same parameters). ``conv_impl`` is accepted for a uniform
  interface and unused: there is no convolution here.
  """
  num_classes: int = 2
  in_channels: int = 1
  conv_impl: str = "auto"
  conv_policy: Any = None  # a jaxseg.ops.ConvPolicy for conv_impl="auto" (None: the default)
  model_name: str = "dense"  # the registry name, for error messages
  image_size: int | None = None
  hidden: int = 64
  lab_softmax: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    check_input(x, name=self.model_name, in_channels=self.in_channels)
    size = (x.shape[1], x.shape[2]) if self.image_size is None else (self.image_size,) * 2
    if tuple(x.shape[1:3]) != size:
      raise DataError(f"model {self.model_name!r} was built for {size[0]}x{size[1]} images "
                      f"(image_size={self.image_size}), got {x.shape[1]}x{x.shape[2]}")
    h = layers.Flatten(name="flatten")(x)
    h = nn.relu(layers.Dense(self.hidden, name="dense")(h))
    z = layers.Dense(size[0] * size[1] * self.num_classes, name="dense_1")(h)
    if self.lab_softmax:
      z = jax.nn.softmax(z, axis=-1)  # over all S*S*C outputs: the lab's Task 1 failure
    return layers.Reshape(size + (self.num_classes,), name="reshape")(z)
