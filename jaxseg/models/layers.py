"""Small Flax layers whose convolutions go through `jaxseg.ops`.

Each layer's parameters are named like Keras' (``kernel``, ``bias``) with the
same layouts, so a Keras model's weights map onto them one to one:

- `Conv`: kernel ``(*kernel_size, C_in, C_out)`` (Keras ``Conv2D``/``Conv3D``);
- `ConvTranspose`: kernel ``(*kernel_size, C_out, C_in)`` (Keras
  ``Conv2DTranspose``, which is also the forward conv's layout that
  `jaxseg.ops.conv_transpose` takes);
- `Dense`: kernel ``(C_in, C_out)``.

Kernels start glorot-uniform and biases at zero, as Keras' defaults.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.errors import ConfigError
from jaxseg.ops import ConvPolicy

Initializer = Callable[..., jax.Array]

glorot_uniform = nn.initializers.glorot_uniform()
# Keras' he_normal: truncated normal, variance 2 / fan_in.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
zeros = nn.initializers.zeros

# A model takes one `conv_impl`; the transposed convs use the adjoint of the
# same algorithm where its name differs (im2col's adjoint is col2im).
_TRANSPOSE_IMPL = {"im2col": "col2im"}


def transpose_impl(conv_impl: str) -> str:
  """The transposed-conv impl of a model built with `conv_impl` ("im2col" -> "col2im", else the same name)."""
  return _TRANSPOSE_IMPL.get(conv_impl, conv_impl)


def check_conv_impl(conv_impl: str) -> str:
  if conv_impl not in ops.CONV_IMPLS:
    raise ConfigError(f"unknown conv_impl {conv_impl!r}; choose one of {', '.join(ops.CONV_IMPLS)}")
  return conv_impl


def per_dim(v, n: int) -> tuple[int, ...]:
  """An int or a sequence as one value per spatial dim (the layers' strides, windows)."""
  return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class Conv(nn.Module):
  """N-d convolution (channels last) through `jaxseg.ops.conv` with `conv_impl` (and, for
  "auto", `conv_policy`)."""
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"
  use_bias: bool = True
  conv_impl: str = "auto"
  conv_policy: ConvPolicy | None = None
  kernel_init: Initializer = glorot_uniform
  bias_init: Initializer = zeros

  @nn.compact
  def __call__(self, x):
    k = tuple(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, k + (x.shape[-1], self.features))
    y = ops.conv(x, kernel, stride=per_dim(self.strides, len(k)), padding=self.padding,
                 impl=self.conv_impl, policy=self.conv_policy)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class ConvTranspose(nn.Module):
  """N-d transposed convolution through `jaxseg.ops.conv_transpose` (Keras semantics), with the
  adjoint of the model's `conv_impl` (`transpose_impl`)."""
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"
  use_bias: bool = True
  conv_impl: str = "auto"
  conv_policy: ConvPolicy | None = None
  kernel_init: Initializer = glorot_uniform
  bias_init: Initializer = zeros

  @nn.compact
  def __call__(self, x):
    k = tuple(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, k + (self.features, x.shape[-1]))
    y = ops.conv_transpose(x, kernel, stride=per_dim(self.strides, len(k)), padding=self.padding,
                           impl=transpose_impl(self.conv_impl), policy=self.conv_policy)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class Dense(nn.Module):
  """Fully connected layer on the last axis."""
  features: int
  kernel_init: Initializer = glorot_uniform
  bias_init: Initializer = zeros

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    return x @ kernel + self.param("bias", self.bias_init, (self.features,))


class MaxPool(nn.Module):
  """Max pooling through `jaxseg.ops.max_pool` (Keras MaxPool semantics)."""
  window: int | Sequence[int] = 2
  strides: int | Sequence[int] | None = None
  padding: Any = "VALID"
  conv_impl: str = "auto"  # "pallas" pools with the Pallas kernel too (2-D)

  @nn.compact
  def __call__(self, x):
    nd = x.ndim - 2
    stride = None if self.strides is None else per_dim(self.strides, nd)
    impl = "pallas" if self.conv_impl == "pallas" and nd == 2 else "xla"
    return ops.max_pool(x, per_dim(self.window, nd), stride=stride, padding=self.padding, impl=impl)


class Flatten(nn.Module):
  """(N, ...) -> (N, prod(...)), row-major like Keras' Flatten on NHWC."""

  @nn.compact
  def __call__(self, x):
    return x.reshape(x.shape[0], -1)


class Reshape(nn.Module):
  target_shape: Sequence[int]

  @nn.compact
  def __call__(self, x):
    return x.reshape((x.shape[0],) + tuple(self.target_shape))


@jax.custom_jvp
def elu(x):
  """ELU (alpha 1, Keras' default): x above 0, exp(x) - 1 below; values as `jax.nn.elu`.

  Its derivative is taken from its output (1 above 0, elu(x) + 1 = exp(x)
  below; float32's rounding of y + 1 makes that exact to 6e-8 absolute where
  exp(x) is tiny), so the backward pass keeps one tensor and evaluates no
  second exp (the U-Net's step time: experiments/bench/RESULTS.md, session 3).
  """
  return jnp.where(x > 0, x, jnp.expm1(jnp.minimum(x, 0)))


@elu.defjvp
def _elu_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  y = elu(x)
  return y, t * jnp.where(x > 0, jnp.ones((), y.dtype), y + 1)


def _hash32(h):
  """lowbias32 (Chris Wellons' integer hash finalizer): uint32 -> well-mixed uint32."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def dropout_keep_mask(key, shape, rate: float, *, row_offset=0):
  """Keep-mask with P(keep) = 1 - rate, from a counter-based hash keyed by `key`.

  Two 32-bit words drawn from `key` (one small threefry call) seed an
  integer hash of each element's two counters: its index within its example
  (shape[1:]) and its example's row in the *global* batch, ``row_offset +``
  its local row. So an example gets the same mask on whichever device (and
  at whichever local row) it lands. On XLA:CPU this is ~9x cheaper than
  `jax.random.bernoulli` over the whole tensor (threefry: 171 ms vs 19 ms
  for unet_small's 8x256x256x16 mask), where threefry took about a tenth of
  the U-Net's train step. Deterministic in `key`, so runs and resumes stay
  reproducible; statistically plain (not for cryptography).
  """
  seed = jax.random.bits(key, (2,), jnp.uint32)
  elem = jax.lax.iota(jnp.uint32, math.prod(shape[1:])).reshape(shape[1:])
  row = (jnp.asarray(row_offset, jnp.uint32) + jax.lax.iota(jnp.uint32, shape[0]))
  row_word = _hash32(row * jnp.uint32(0x85EBCA6B) + seed[1]).reshape((shape[0],) + (1,) * (len(shape) - 1))
  h = _hash32(_hash32(elem * jnp.uint32(0x9E3779B9) + seed[0]) ^ row_word)
  return h >= jnp.uint32(min(int(round(rate * 2.0**32)), 2**32 - 1))


# The offset of the local batch in the global one, set around `model.apply` by
# a data-parallel step (a traced value there); read by `Dropout` at trace time.
_ROW_OFFSET: contextvars.ContextVar = contextvars.ContextVar("jaxseg_dropout_row_offset", default=0)


@contextlib.contextmanager
def global_rows(offset):
  """Within this block, `Dropout` numbers its input's rows from `offset`.

  A data-parallel step whose devices each hold a slice of the batch traces
  `model.apply` inside ``global_rows(device_index * local_batch)``, so each
  example's dropout mask depends on its index in the global batch, not on
  the device count (`dropout_keep_mask`). Outside, rows count from 0: one
  device, or `jax.jit` over arrays that are the global batch.
  """
  token = _ROW_OFFSET.set(offset)
  try:
    yield
  finally:
    _ROW_OFFSET.reset(token)


class Dropout(nn.Module):
  """Keras-style (inverted) dropout: active only when ``train`` (needs the "dropout" rng).

  Masks come from `dropout_keep_mask` (a keyed integer hash of the element's
  position and its example's global row, see `global_rows`) instead of
  threefry Bernoulli draws; kept values are scaled by 1 / (1 - rate).
  """
  rate: float

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not train or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    keep = dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate, row_offset=_ROW_OFFSET.get())
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


class CenterCropConcat(nn.Module):
  """Crops ``skip`` to the centre of ``x``'s spatial size, then concatenates channels.

  With unpadded convolutions the contracting path's maps are larger than the
  upsampled ones (Ronneberger et al. 2015, Fig. 1); with SAME padding the
  sizes agree and nothing is cropped.
  """

  @nn.compact
  def __call__(self, x, skip):
    starts = [0] + [(s - t) // 2 for s, t in zip(skip.shape[1:-1], x.shape[1:-1])] + [0]
    sizes = (skip.shape[0],) + x.shape[1:-1] + (skip.shape[-1],)
    skip = jax.lax.slice(skip, starts, [a + b for a, b in zip(starts, sizes)])
    return jnp.concatenate([x, skip], axis=-1)


def _instance_stats(x, epsilon):
  axes = tuple(range(1, x.ndim - 1))
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
  return mean, jax.lax.rsqrt(var + epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def instance_norm(x, scale, bias, epsilon=1e-5):
  """``(x - mean) / sqrt(var + epsilon) * scale + bias``, mean and biased variance per example and
  channel over the spatial axes of a channels-last ``x``.

  Its gradient is the closed form (``xh`` the normalised x, ``g`` the cotangent):
  ``dx = scale / sqrt(var + epsilon) * (g - mean(g) - xh * mean(g * xh))``, ``dscale = sum(g * xh)``,
  ``dbias = sum(g)``: two reductions and one elementwise pass over the input, and only x, the
  mean and the inverse deviation kept for the backward. JAX's derivative of the forward makes
  more passes and keeps more (about twice the time on unet3d_small's activations, and a larger
  step peak; experiments/bench/RESULTS.md, session 10).
  """
  mean, inv = _instance_stats(x, epsilon)
  return (x - mean) * inv * scale + bias


def _instance_norm_fwd(x, scale, bias, epsilon):
  mean, inv = _instance_stats(x, epsilon)
  return (x - mean) * inv * scale + bias, (x, scale, mean, inv)


def _instance_norm_bwd(epsilon, res, g):
  x, scale, mean, inv = res
  axes = tuple(range(1, x.ndim - 1))
  xh = (x - mean) * inv
  m1 = jnp.mean(g, axis=axes, keepdims=True)
  m2 = jnp.mean(g * xh, axis=axes, keepdims=True)
  n = math.prod(x.shape[a] for a in axes)
  batch = tuple(range(x.ndim - 1))
  dx = (g - m1 - xh * m2) * (scale * inv)
  return dx, n * jnp.sum(m2, axis=batch), n * jnp.sum(m1, axis=batch)


instance_norm.defvjp(_instance_norm_fwd, _instance_norm_bwd)


class InstanceNorm(nn.Module):
  """Instance normalisation (Ulyanov et al. 2016), as nnU-Net's ``InstanceNorm3d(affine=True)``.

  Each example's channel is shifted and scaled to zero mean and unit variance
  over its spatial axes (biased variance, ``epsilon`` 1e-5), then multiplied
  by a learned ``scale`` (ones) and shifted by a learned ``bias`` (zeros).
  The gradient is `instance_norm`'s closed form.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    return instance_norm(x, self.param("scale", nn.initializers.ones, (c,)),
                         self.param("bias", zeros, (c,)), self.epsilon)


# Layers listed by `jaxseg summary`, one row each (containers are not listed).
SUMMARY_LAYERS = (Conv, ConvTranspose, Dense, MaxPool, Flatten, Reshape, Dropout,
                  CenterCropConcat, InstanceNorm)
