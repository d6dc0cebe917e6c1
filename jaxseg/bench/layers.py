"""The conv layer shapes of a model, captured from the model itself.

``capture_layers`` traces ``model.init`` abstractly (``jax.eval_shape``: no
FLOPs, no memory) under Flax's method interception (``nn.intercept_methods``),
which sees every `Conv` and `ConvTranspose` layer's call, so the shapes are
the ones the model really uses.
``table_layers`` is the same list written from the architectures in the
seeds (lab FCN, DSB-2018 U-Net); it is the fallback when a model does not
go through ``jaxseg.ops`` and a cross-check of the capture in the tests.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxseg.errors import ConfigError, UserError


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One convolution call: shapes and the keyword arguments it was called with.

  For ``kind="conv_transpose"``, ``x_shape`` is the transposed conv's input
  (the small map) and ``w_shape`` the forward conv's kernel layout
  ``(*k, C_out, C_in)`` as in ``jaxseg.ops.conv_transpose``.
  """
  model: str
  name: str
  kind: str  # "conv" | "conv_transpose"
  x_shape: tuple[int, ...]
  w_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  stride: tuple[int, ...]
  padding: Any = "SAME"
  dilation: tuple[int, ...] = (1, 1)
  groups: int = 1
  count: int = 1  # how many calls of the model have exactly this shape

  @property
  def flops(self) -> int:
    """Forward FLOPs, 2 per multiply-add, counting only taps that are computed.

    conv: 2*N*prod(out spatial)*C_out*prod(k)*C_in/groups.
    conv_transpose: every input pixel meets every tap once (its useful work;
    ``lax`` pays far more, see ``lax_flops``): 2*N*prod(in spatial)*C_in*prod(k)*C_out.
    """
    k = math.prod(self.w_shape[:-2])
    if self.kind == "conv":
      n = self.out_shape[0]
      return 2 * n * math.prod(self.out_shape[1:-1]) * self.out_shape[-1] * k * self.w_shape[-2]
    n = self.x_shape[0]
    return 2 * n * math.prod(self.x_shape[1:-1]) * self.x_shape[-1] * k * self.w_shape[-2]

  def describe(self) -> str:
    k = "x".join(map(str, self.w_shape[:-2]))
    s = "x".join(map(str, self.x_shape[1:-1]))
    arrow = "->" if self.kind == "conv" else "=>"
    cin = self.x_shape[-1]
    cout = self.out_shape[-1]
    st = self.stride[0] if len(set(self.stride)) == 1 else self.stride
    return f"{s}x{cin} {k}/{st} {arrow} {cout}"


def conv_flops(n, out_spatial, cout, kernel, cin, groups=1) -> int:
  """2*N*prod(out_spatial)*C_out*prod(kernel)*C_in/groups (hand formula, for tests)."""
  return 2 * n * math.prod(out_spatial) * cout * math.prod(kernel) * cin // groups


def _tuple(v, n):
  return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _same_out(size, stride):
  return -(-size // stride)


def _conv(model, name, n, hw, cin, cout, k, stride=1):
  out = tuple(_same_out(s, stride) for s in hw)
  return ConvLayer(model, name, "conv", (n, *hw, cin), (k, k, cin, cout), (n, *out, cout),
                   (stride, stride))


def _convt(model, name, n, hw, cin, cout, k, stride):
  out = tuple(s * stride for s in hw)
  return ConvLayer(model, name, "conv_transpose", (n, *hw, cin), (k, k, cout, cin),
                   (n, *out, cout), (stride, stride))


def table_layers(model: str, *, batch: int, image_size: int, in_channels: int = 1,
                 num_classes: int = 2) -> list[ConvLayer]:
  """Conv layers written from the seeds' architectures (``fcn``, ``fcn_deep``, ``unet_small``)."""
  n, s = batch, image_size
  if model in ("fcn", "fcn_deep"):
    q = s // 16
    layers = [_conv(model, "conv1", n, (s, s), in_channels, 100, 5, 2),
              _conv(model, "conv2", n, (s // 4, s // 4), 100, 200, 5, 2),
              _conv(model, "conv3", n, (q, q), 200, 300, 3),
              _conv(model, "conv4", n, (q, q), 300, 300, 3)]
    if model == "fcn_deep":
      layers.append(_conv(model, "conv5", n, (q, q), 300, 300, 3))
    layers += [_conv(model, "score", n, (q, q), 300, num_classes, 3),
               _convt(model, "upscore", n, (q, q), num_classes, num_classes, 31, 16)]
    return layers
  if model == "unet_small":
    widths = (16, 32, 64, 128, 256)
    layers, cin = [], in_channels
    for i, c in enumerate(widths):
      hw = (s >> i, s >> i)
      layers += [_conv(model, f"enc{i + 1}a", n, hw, cin, c, 3),
                 _conv(model, f"enc{i + 1}b", n, hw, c, c, 3)]
      cin = c
    for i in range(3, -1, -1):
      c = widths[i]
      small = (s >> (i + 1), s >> (i + 1))
      hw = (s >> i, s >> i)
      layers += [_convt(model, f"up{i + 1}", n, small, cin, c, 2, 2),
                 _conv(model, f"dec{i + 1}a", n, hw, 2 * c, c, 3),
                 _conv(model, f"dec{i + 1}b", n, hw, c, c, 3)]
      cin = c
    layers.append(_conv(model, "head", n, (s, s), cin, num_classes, 1))
    return layers
  raise ConfigError(f"--model: no conv layer table for {model!r} (tables: fcn, fcn_deep, unet_small)")


def capture_layers(model_name: str, *, batch: int, image_size, in_channels: int = 1,
                   num_classes: int = 2) -> list[ConvLayer]:
  """Conv and transposed-conv layers of ``models.create(model_name)`` at this input shape, in call
  order (layers of identical shape merged, with a count). [] for a model without such layers.

  image_size: an int (the same size on each of the model's spatial dims) or the spatial shape."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from jaxseg import models
  from jaxseg.models import layers as model_layers_lib
  model = models.create(model_name, num_classes=num_classes, in_channels=in_channels)
  calls: list = []

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    m = context.module
    if context.method_name == "__call__" and isinstance(m, (model_layers_lib.Conv, model_layers_lib.ConvTranspose)):
      x, k = args[0], tuple(m.kernel_size)
      conv = isinstance(m, model_layers_lib.Conv)
      w = k + ((x.shape[-1], m.features) if conv else (m.features, x.shape[-1]))
      calls.append(("conv" if conv else "conv_transpose", tuple(x.shape), w, tuple(y.shape),
                    model_layers_lib.per_dim(m.strides, len(k)), m.padding))
    return y

  spatial = tuple(image_size) if isinstance(image_size, (tuple, list)) else \
      (image_size,) * models.spatial_dims(model_name)
  x = jax.ShapeDtypeStruct((batch, *spatial, in_channels), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.key(0), x)
  layers = []
  index: dict = {}
  for i, (kind, xs, ws, ys, stride, padding) in enumerate(calls):
    nd = len(xs) - 2
    if not isinstance(padding, str):
      padding = tuple(tuple(int(v) for v in p) for p in padding)
    layer = ConvLayer(model_name, f"{kind}{i}", kind, xs, ws, ys, stride, padding.upper()
                      if isinstance(padding, str) else padding, (1,) * nd, 1)
    key = dataclasses.replace(layer, name="")
    if key in index:
      j = index[key]
      layers[j] = dataclasses.replace(layers[j], count=layers[j].count + 1)
    else:
      index[key] = len(layers)
      layers.append(layer)
  return layers


def model_layers(model_name: str, *, batch: int, image_size, in_channels: int = 1,
                 num_classes: int = 2) -> tuple[list[ConvLayer], str]:
  """Captured layers if the model is there and uses jaxseg.ops, else the table; and which."""
  kw = dict(batch=batch, image_size=image_size, in_channels=in_channels, num_classes=num_classes)
  try:
    layers = capture_layers(model_name, **kw)
  except NotImplementedError:
    layers = []
  if layers:
    try:  # name them as the architecture table does, if it describes the same layers
      table = dedupe(table_layers(model_name, **kw)) if isinstance(image_size, int) else []
    except UserError:
      table = []
    strip = lambda ls: [dataclasses.replace(l, name="") for l in ls]
    if strip(table) == strip(layers):
      layers = [dataclasses.replace(l, name=t.name) for l, t in zip(layers, table)]
    return layers, "captured from jaxseg.models (Flax method interception under jax.eval_shape)"
  return dedupe(table_layers(model_name, **kw)), "architecture table (model not available)"


def dedupe(layers: list[ConvLayer]) -> list[ConvLayer]:
  """Merge layers of identical shape and arguments, keeping the first name and a count."""
  out, index = [], {}
  for layer in layers:
    key = dataclasses.replace(layer, name="", count=1)
    if key in index:
      j = index[key]
      out[j] = dataclasses.replace(out[j], count=out[j].count + layer.count)
    else:
      index[key] = len(out)
      out.append(layer)
  return out


def matrix_nnz(layer: ConvLayer) -> int:
  """Stored entries of ``conv_matrix`` for one image: taps that hit the input, times C_in*C_out.

  Whether a tap hits the (padded) input factorises over spatial dims, so the
  count is a product of 1-D counts.
  """
  if layer.kind != "conv":
    raise ValueError("matrix_nnz is defined for forward convs")
  spatial_in = layer.x_shape[1:-1]
  spatial_out = layer.out_shape[1:-1]
  kernel = layer.w_shape[:-2]
  total = 1
  for d, (size, out, k, s) in enumerate(zip(spatial_in, spatial_out, kernel, layer.stride)):
    dil = layer.dilation[d]
    eff = (k - 1) * dil + 1
    if layer.padding == "SAME":
      lo = max((out - 1) * s + eff - size, 0) // 2
    elif layer.padding == "VALID":
      lo = 0
    else:
      lo = layer.padding[d][0]
    pos = np.arange(out)[:, None] * s - lo + np.arange(k)[None, :] * dil
    total *= int(((pos >= 0) & (pos < size)).sum())
  return total * layer.w_shape[-2] * layer.w_shape[-1]
