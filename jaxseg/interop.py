"""Weights of Keras models (the DLI lab's) as jaxseg variables.

`from_keras(keras_model, name)` maps the Keras model's weight layers, in
order, onto the parameter layers of `jaxseg.models.create(name)`:

- ``Conv1D/2D/3D`` -> `layers.Conv`: kernel ``(*k, C_in, C_out)``, same layout;
- ``Conv2DTranspose/Conv3DTranspose`` -> `layers.ConvTranspose`: Keras'
  kernel ``(*k, C_out, C_in)`` is exactly the layout `jaxseg.ops.conv_transpose`
  takes, so it is copied as is;
- ``Dense`` -> `layers.Dense`: kernel ``(C_in, C_out)``. Keras' ``Flatten`` of
  NHWC is row-major like ours, so the first Dense of the lab's Task 1 model
  needs no permutation.

Layers without weights (pooling, dropout, reshape, concatenation) are
skipped; activations are part of the architecture on both sides. Keras is
not imported here: the function only calls ``layers``, ``get_weights()``,
``input_shape`` and ``output_shape`` on the model it is given.
"""

from __future__ import annotations

import numpy as np

from jaxseg.errors import ConfigError

_KERAS_TO_OURS = {
    "Conv1D": "Conv", "Conv2D": "Conv", "Conv3D": "Conv",
    "Conv1DTranspose": "ConvTranspose", "Conv2DTranspose": "ConvTranspose",
    "Conv3DTranspose": "ConvTranspose",
    "Dense": "Dense",
}


def _weight_layers(keras_model):
  """Keras layers that hold weights, in model order (nested models flattened)."""
  out = []
  for layer in keras_model.layers:
    if hasattr(layer, "layers") and not type(layer).__name__ in _KERAS_TO_OURS:
      out.extend(_weight_layers(layer))
    elif layer.get_weights():
      out.append(layer)
  return out


def _shape(shape):
  # Keras 3 returns a tuple; a multi-input/output model a list of them.
  if isinstance(shape, list):
    if len(shape) != 1:
      raise ConfigError(f"from_keras: expected one input and one output, got shapes {shape}")
    shape = shape[0]
  return tuple(shape)


def from_keras(keras_model, name: str, **kw) -> dict:
  """Variables ``{"params": ...}`` for ``jaxseg.models.create(name, **kw)`` from a Keras model.

  ``in_channels`` and ``num_classes`` default to the Keras model's input and
  output channels, and for ``dense`` ``image_size`` to its input height.
  Raises ConfigError when the layers do not correspond (count, kind or shape).

  Example::

      keras_model = keras.Sequential(lab_fcn_layers)   # trained in the lab
      variables = jaxseg.interop.from_keras(keras_model, "fcn")
      logits = jaxseg.models.create("fcn").apply(variables, images)
  """
  import jax.numpy as jnp

  from jaxseg import models
  from jaxseg.models.summary import layer_rows

  in_shape, out_shape = _shape(keras_model.input_shape), _shape(keras_model.output_shape)
  kw.setdefault("in_channels", int(in_shape[-1]))
  kw.setdefault("num_classes", int(out_shape[-1]))
  if name == "dense" and in_shape[1] is not None:
    kw.setdefault("image_size", int(in_shape[1]))
  model = models.create(name, **kw)

  # Our layer list comes from tracing the model (no weights allocated); the
  # spatial size only has to be one the model accepts.
  default = 572 if name == "unet" and kw.get("padding", "valid").upper() == "VALID" else 64
  spatial = tuple(int(s) if s is not None else default for s in in_shape[1:-1])
  ours = [r for r in layer_rows(model, (1,) + spatial + (kw["in_channels"],)) if r.params]
  theirs = _weight_layers(keras_model)
  if len(ours) != len(theirs):
    raise ConfigError(f"from_keras: the Keras model has {len(theirs)} weight layers, "
                      f"model {name!r} has {len(ours)}")

  x = np.zeros((1,) + spatial + (kw["in_channels"],), np.float32)
  shapes = _param_shapes(model, x)
  params: dict = {}
  for row, layer in zip(ours, theirs):
    kind = type(layer).__name__
    if _KERAS_TO_OURS.get(kind) != row.type:
      raise ConfigError(f"from_keras: Keras layer {layer.name!r} ({kind}) does not match "
                        f"{row.name!r} ({row.type}) of model {name!r}")
    weights = layer.get_weights()
    expected = shapes[row.name]
    if len(weights) != len(expected) or any(tuple(w.shape) != s for w, s in zip(weights, expected)):
      raise ConfigError(f"from_keras: Keras layer {layer.name!r} has weight shapes "
                        f"{[tuple(w.shape) for w in weights]}, {row.name!r} of model {name!r} "
                        f"needs {list(expected)}")
    node = params
    for key in row.name.split("/")[:-1]:
      node = node.setdefault(key, {})
    node[row.name.split("/")[-1]] = {"kernel": jnp.asarray(weights[0], jnp.float32),
                                     "bias": jnp.asarray(weights[1], jnp.float32)}
  return {"params": params}


def _param_shapes(model, x) -> dict[str, list[tuple]]:
  """``{"path/of/layer": [kernel shape, bias shape]}`` of a model's parameter layers."""
  import jax

  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out = {}

  def walk(tree, path):
    if "kernel" in tree:
      out["/".join(path)] = [tuple(tree["kernel"].shape)] + (
          [tuple(tree["bias"].shape)] if "bias" in tree else [])
      return
    for k, v in tree.items():
      walk(v, path + (k,))

  walk(variables["params"], ())
  return out
