"""Argument checking and geometry shared by the conv, transposed-conv and pool ops.

Everything here runs in Python on static shapes, before any tracing, so a bad
argument is reported as a :class:`jaxseg.errors.ConfigError` with a one-line
message instead of an XLA error from deep inside a jitted function.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Sequence

from jaxseg.errors import ConfigError


def as_tuple(value, nd: int, name: str) -> tuple[int, ...]:
  """`value` as a tuple of `nd` positive ints (an int is repeated)."""
  if isinstance(value, (tuple, list)):
    out = tuple(value)
    if len(out) != nd:
      raise ConfigError(f"{name}={value!r} has {len(out)} entries, expected {nd} (one per spatial dim)")
  else:
    out = (value,) * nd
  for v in out:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"{name}={value!r} must be a positive int or a sequence of {nd} positive ints")
  return out


def same_pads(in_size: int, k_eff: int, stride: int) -> tuple[int, int]:
  """TensorFlow SAME padding of one dim: output ceil(in/stride), extra pad after."""
  out = -(-in_size // stride)
  total = max((out - 1) * stride + k_eff - in_size, 0)
  return total // 2, total - total // 2


def resolve_padding(padding, in_shape: Sequence[int], k_eff: Sequence[int],
                    stride: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Explicit (lo, hi) pads per spatial dim for "SAME", "VALID" or a (lo, hi) sequence."""
  nd = len(in_shape)
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "VALID":
      return ((0, 0),) * nd
    if mode == "SAME":
      return tuple(same_pads(i, k, s) for i, k, s in zip(in_shape, k_eff, stride))
    raise ConfigError(f"padding={padding!r} must be 'SAME', 'VALID' or a sequence of (lo, hi) pairs")
  try:
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    raise ConfigError(f"padding={padding!r} must be 'SAME', 'VALID' or a sequence of (lo, hi) pairs") from None
  if len(pads) != nd:
    raise ConfigError(f"padding={padding!r} has {len(pads)} pairs, expected {nd} (one per spatial dim)")
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    raise ConfigError(f"padding={padding!r}: negative padding is not supported")
  return pads


def effective_kernel(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
  return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))


class ConvGeometry(NamedTuple):
  """Static geometry of one N-d convolution (per spatial dim unless noted)."""
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  kernel: tuple[int, ...]
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  cin: int       # total input channels
  cout: int      # total output channels
  groups: int

  @property
  def nd(self) -> int:
    return len(self.in_shape)

  @property
  def taps(self) -> list[tuple[int, ...]]:
    """All kernel tap indices in row-major order (the order of w.reshape(-1, ...))."""
    return list(itertools.product(*(range(k) for k in self.kernel)))


def conv_geometry(x_shape: Sequence[int], w_shape: Sequence[int], *, stride, padding,
                  dilation, groups) -> ConvGeometry:
  """Check conv arguments (x: (N, *spatial, Cin), w: (*k, Cin//groups, Cout))."""
  x_shape, w_shape = tuple(x_shape), tuple(w_shape)
  if len(x_shape) < 3 or len(x_shape) > 5:
    raise ConfigError(f"conv input has shape {x_shape}; expected (N, *spatial, C) with 1 to 3 spatial dims")
  nd = len(x_shape) - 2
  if len(w_shape) != nd + 2:
    raise ConfigError(f"conv kernel has shape {w_shape}; expected rank {nd + 2} "
                      f"(*kernel, C_in // groups, C_out) for a {nd}-D input of shape {x_shape}")
  if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
    raise ConfigError(f"groups={groups!r} must be a positive int")
  stride = as_tuple(stride, nd, "stride")
  dilation = as_tuple(dilation, nd, "dilation")
  cin, cout = x_shape[-1], w_shape[-1]
  if cin % groups:
    raise ConfigError(f"groups={groups} does not divide the {cin} input channels")
  if cout % groups:
    raise ConfigError(f"groups={groups} does not divide the {cout} output channels of the kernel")
  if w_shape[-2] * groups != cin:
    raise ConfigError(f"kernel shape {w_shape} expects {w_shape[-2]} x groups={groups} input channels, "
                      f"input has {cin}")
  kernel = w_shape[:nd]
  if any(k < 1 for k in kernel):
    raise ConfigError(f"kernel shape {w_shape} has an empty spatial dim")
  in_shape = x_shape[1:-1]
  k_eff = effective_kernel(kernel, dilation)
  pads = resolve_padding(padding, in_shape, k_eff, stride)
  out_shape = tuple((i + lo + hi - k) // s + 1 for i, (lo, hi), k, s in zip(in_shape, pads, k_eff, stride))
  if any(o < 1 for o in out_shape):
    raise ConfigError(f"conv of input {x_shape} with kernel {kernel} (dilation {dilation}, padding "
                      f"{padding!r}) has an empty output {out_shape}")
  return ConvGeometry(in_shape, out_shape, kernel, stride, dilation, pads, cin, cout, groups)


def deconv_output_length(n: int, k: int, padding, stride: int, dilation: int,
                         output_padding: int | None) -> int:
  """Keras' `deconv_output_length` (one dim); `padding` may also be a (lo, hi) pair."""
  k_eff = (k - 1) * dilation + 1
  if isinstance(padding, str):
    mode = padding.upper()
    if output_padding is None:
      if mode == "VALID":
        return n * stride + max(k_eff - stride, 0)
      return n * stride
    pad = k_eff // 2 if mode == "SAME" else 0
    return (n - 1) * stride + k_eff - 2 * pad + output_padding
  lo, hi = padding
  return (n - 1) * stride + k_eff - lo - hi + (output_padding or 0)


def keras_same_output_padding_pads(k_eff: int, output_padding: int) -> tuple[int, int]:
  """Forward-conv pads of Keras' transposed conv with padding="same" and an explicit output_padding.

  Keras pads the stride-dilated input by (left, right) with pad_len =
  k_eff + k_eff % 2 - 2 + output_padding and left = min(ceil(pad_len / 2), k_eff - 1);
  the forward conv it is the adjoint of has pads (k_eff - 1 - left, k_eff - 1 - right),
  the high one clipped at 0 (the stride remainder covers the rest).
  """
  pad_len = k_eff + k_eff % 2 - 2 + output_padding
  left = min((pad_len + 1) // 2, k_eff - 1)
  return k_eff - 1 - left, max(k_eff - 1 - (pad_len - left), 0)


def conv_transpose_geometry(y_shape: Sequence[int], w_shape: Sequence[int], *, stride, padding,
                            output_padding, dilation) -> ConvGeometry:
  """Geometry of the *forward* conv whose adjoint `conv_transpose(y, w, ...)` is.

  y: (N, *spatial, C_in_of_transpose); w: (*k, C_out_of_transpose, C_in_of_transpose).
  The forward conv maps (N, *in', C_out_of_transpose) to y's shape, where in' is
  given by Keras' `deconv_output_length`.
  """
  y_shape, w_shape = tuple(y_shape), tuple(w_shape)
  if len(y_shape) < 3 or len(y_shape) > 5:
    raise ConfigError(f"conv_transpose input has shape {y_shape}; expected (N, *spatial, C) with 1 to 3 spatial dims")
  nd = len(y_shape) - 2
  if len(w_shape) != nd + 2:
    raise ConfigError(f"conv_transpose kernel has shape {w_shape}; expected rank {nd + 2} "
                      f"(*kernel, C_out, C_in) for input of shape {y_shape}")
  if w_shape[-1] != y_shape[-1]:
    raise ConfigError(f"conv_transpose kernel shape {w_shape} expects {w_shape[-1]} input channels "
                      f"(last kernel dim), input has {y_shape[-1]}")
  stride = as_tuple(stride, nd, "stride")
  dilation = as_tuple(dilation, nd, "dilation")
  kernel = w_shape[:nd]
  k_eff = effective_kernel(kernel, dilation)
  n = y_shape[1:-1]
  if output_padding is None:
    opad = (None,) * nd
  else:
    opad = tuple(output_padding) if isinstance(output_padding, (tuple, list)) else (output_padding,) * nd
    if len(opad) != nd or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in opad):
      raise ConfigError(f"output_padding={output_padding!r} must be a non-negative int or {nd} of them")
    for p, s, d in zip(opad, stride, dilation):
      if p >= s and p >= d:
        raise ConfigError(f"output_padding={output_padding!r} must be smaller than the stride {stride} "
                          f"or the dilation {dilation}")
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ConfigError(f"padding={padding!r} must be 'SAME', 'VALID' or a sequence of (lo, hi) pairs")
    per_dim = (padding,) * nd
  else:
    per_dim = resolve_padding(padding, n, k_eff, stride)
  in_shape = tuple(deconv_output_length(n_i, k, p, s, d, op)
                   for n_i, k, p, s, d, op in zip(n, kernel, per_dim, stride, dilation, opad))
  if any(i < 1 for i in in_shape):
    raise ConfigError(f"conv_transpose of {y_shape} with kernel {kernel}, padding {padding!r} has an "
                      f"empty output {in_shape}")
  fwd_padding = padding
  if isinstance(padding, str) and padding.upper() == "SAME" and output_padding is not None:
    # Keras places SAME + output_padding by its own rule, which is not always
    # TF SAME at the output size (e.g. even kernels, output_padding=0): use
    # the explicit forward pads that rule implies.
    fwd_padding = [keras_same_output_padding_pads(k, op) for k, op in zip(k_eff, opad)]
  geo = conv_geometry((y_shape[0],) + in_shape + (w_shape[-2],), w_shape, stride=stride,
                      padding=fwd_padding, dilation=dilation, groups=1)
  if geo.out_shape != n:
    raise ConfigError(f"conv_transpose: with padding={padding!r}, output_padding={output_padding!r} the "
                      f"forward conv of size {in_shape} gives {geo.out_shape}, not the input size {n}")
  return geo


def check_impl(impl, impls, what: str) -> None:
  if impl not in impls:
    raise ConfigError(f"unknown {what} impl {impl!r}; choose one of {', '.join(impls)}")


def prod(xs) -> int:
  return math.prod(xs)
