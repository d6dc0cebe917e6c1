"""Train-step variants of a model, timed in turn in one process (before/after for proposals).

    .venv/bin/python experiments/bench/step_variants.py --model fcn --batch-size 8 \
        --image-size 256 --steps 3 --rounds 3 --variants base,upscore_col2im

Each variant changes one thing while the step is traced and compiled (a
monkeypatch of another package's module attribute, in this script only), so
the proposal for that package can be measured before it is applied:

- base: the model and step as they are;
- upscore_col2im: transposed convs of a "lax" model run as col2im (one GEMM +
  overlap-add) instead of lax's stride-dilated conv, which multiplies the
  31x31/16 upscore's work by 16*16 in zeros;
- pool_reduce_window: max-pool as plain lax.reduce_window (the old way);
- plain_step: the bench's bare step (no accuracy/Dice metrics in the step);
- no_dropout: dropout layers removed (what dropout's random masks cost);
- dropout_u8: dropout masks from 8-bit random numbers instead of 32-bit floats;
- transpose_col2im_no_overlap: transposed convs as col2im (for 2x2/2 that is one GEMM
  and a reshape) instead of lax;
- proposed: dropout_u8 + transpose_col2im_no_overlap;
- rbg_dropout: JAX's "unsafe_rbg" PRNG instead of threefry while tracing (the
  dropout masks come from XLA's RngBitGenerator);
- xla_conv_grad: convs of a "lax" model differentiated by XLA itself (the weight
  gradient as XLA's conv) instead of jaxseg.ops.conv_grad's GEMMs;
- gemm_dw_strided / gemm_dw_strided_small / gemm_dw_all: GEMM weight gradients
  for strided convs only / also stride-1 convs of <= 2^14 output rows / every conv;
- elu_custom_jvp: ELU whose derivative comes from its output (y + 1 below 0),
  one saved tensor and no second exp (since adopted as `jaxseg.models.layers.elu`:
  compare with elu_autodiff);
- elu_autodiff: `jax.nn.elu` differentiated by JAX (the way before);
- small_im2col_fwd: layers with GEMM dW and taps * C_in <= 64 (the FCN's first
  conv) run their forward pass as im2col (one GEMM) instead of XLA's conv;
- upconv_d2s: kernel == stride transposed convs (unet_small's 2x2/2) as one GEMM and a
  depth-to-space transpose (the form before `jaxseg.ops.phase._no_overlap`);
- ce_unrolled: the cross-entropy's log-sum-exp over classes written per class slice
  (elementwise) instead of reductions over the last axis of size C;
- strided_dx_xla: strided convs' input gradient as XLA's conv over the stride-dilated
  cotangent (the way before `jaxseg.ops.conv_grad.col2im_input_grad`);
- single_channel_fma / single_channel_fma_gemm: convs with one input channel (the first
  layers) as a sum of taps times kernel rows (elementwise) with XLA's / GEMM dW;
- small_xla_dw: the FCN's first conv (taps * C_in <= 64) with XLA's weight gradient;
- xla_small_convs: XLA's convolution for the layers that use the C++ kernels of
  `jaxseg.ops.cpu_conv` (the way before them);
- no_winograd: the layers that `jaxseg.ops.winograd.applies` to (the FCN's 5x5/2 conv on
  64^2 and 3x3 convs on 16^2) as they ran before it (XLA / GEMM backward);
- winograd_C_P: Winograd for layers with C_in, C_out >= C and at most P^2 output pixels
  per image (default rule: `winograd.applies`);
- stride1_xla_dw: every stride-1 conv takes XLA's weight gradient, also the small-patch
  few-row ones (`conv_grad.MAX_ROWS_STRIDE1 = 0`);
- stride1_gemm_dw: stride-1 convs with few output rows take GEMM weight gradients whatever
  their patch size (the FCN's 16^2 layers, the U-Net's 16^2 bottom: the rule before session 5's
  `conv_grad.STRIDE1_SMALL_ONLY`);
- strided_dx_col2im_gemm: strided convs' input gradient as one GEMM + overlap-add
  (`conv_grad.col2im_input_grad`) instead of one `cpu_conv` kernel conv per stride phase;
- strided_dw_kernel: strided convs with `conv_grad`'s backward take their weight gradient
  from `cpu_conv`'s C++ kernel instead of GEMMs over tap slices;
- strided_fwd_kernel: strided convs with `conv_grad`'s backward take their forward from
  `cpu_conv`'s C++ kernel instead of XLA's conv (`conv_grad.KERNEL_FORWARD`);
- cpu_conv_upto_C_P: the C++ kernels for stride-1 layers with C_in * C_out <= C^2 and
  at least P^2 output pixels per image (default rule: `cpu_conv.applies`);
- strided_dx_col2im: strided lax convs get a VJP whose dx is col2im (one GEMM +
  overlap-add) instead of XLA's conv over the zero-dilated cotangent.

XLA flags cannot change inside one process: compare them with
`flags_interleaved.py` instead. Like the `jaxseg` command, the script first
adds jaxseg's XLA flag to XLA_FLAGS and re-executes itself with glibc's
huge-page tunable (`jaxseg.xla_flags`, `jaxseg.hugepages`; the same opt-outs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys


@contextlib.contextmanager
def _patched(obj, name, value):
  old = getattr(obj, name)
  setattr(obj, name, value)
  try:
    yield
  finally:
    setattr(obj, name, old)


@contextlib.contextmanager
def _patched_item(d, key, value):
  old = d[key]
  d[key] = value
  try:
    yield
  finally:
    d[key] = old


def _col2im_when_no_overlap(conv_impl, *_):
  # ConvTranspose calls transpose_impl(conv_impl, kernel, strides) at trace time; this
  # maps every lax transposed conv to col2im (unet_small's are all 2x2/2).
  return {"im2col": "col2im", "lax": "col2im"}.get(conv_impl, conv_impl)


def variant(name):
  """(context manager for tracing, step_kind)."""
  from jaxseg.models import layers
  from jaxseg import ops
  if name == "base":
    return contextlib.nullcontext(), "product"
  if name == "plain_step":
    return contextlib.nullcontext(), "plain"
  if name == "upscore_col2im":
    return _patched(layers, "_TRANSPOSE_IMPL", {"im2col": "col2im", "lax": "col2im"}), "product"
  if name == "pool_reduce_window":
    import jax.numpy as jnp
    from jax import lax

    def max_pool(x, window, *, stride=None, padding="VALID"):
      stride = window if stride is None else stride
      return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), padding)
    return _patched(ops, "max_pool", max_pool), "product"
  if name == "no_dropout":
    import flax.linen as nn

    class NoDropout(nn.Module):
      rate: float

      @nn.compact
      def __call__(self, x, train: bool = False):
        return x
    return _patched(layers, "Dropout", NoDropout), "product"
  if name in ("dropout_u8", "proposed"):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class DropoutU8(nn.Module):
      """Dropout from 8 random bits per element (threefry makes 32 at a time: 4x fewer words)."""
      rate: float

      @nn.compact
      def __call__(self, x, train: bool = False):
        if not train or self.rate == 0.0:
          return x
        bits = jax.random.bits(self.make_rng("dropout"), x.shape, jnp.uint8)
        # keep with probability 1 - rate, to 1/256
        keep = bits >= jnp.uint8(round(self.rate * 256))
        scale = 256 / (256 - round(self.rate * 256))
        return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))
    if name == "dropout_u8":
      return _patched(layers, "Dropout", DropoutU8), "product"
    stack = contextlib.ExitStack()
    stack.enter_context(_patched(layers, "Dropout", DropoutU8))
    stack.enter_context(_patched(layers, "transpose_impl", _col2im_when_no_overlap))
    return stack, "product"
  if name == "transpose_col2im_no_overlap":
    return _patched(layers, "transpose_impl", _col2im_when_no_overlap), "product"
  if name == "rbg_dropout":
    import jax

    class _Cfg:
      def __enter__(self):
        self.old = jax.config.jax_default_prng_impl
        jax.config.update("jax_default_prng_impl", "unsafe_rbg")

      def __exit__(self, *exc):
        jax.config.update("jax_default_prng_impl", self.old)
    return _Cfg(), "product"
  if name == "strided_dx_col2im":
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from im2col_variants import make_lax_col2im_dx
    real_conv = ops.conv

    def conv(x, w, *, stride=1, padding="SAME", dilation=1, groups=1, impl="lax"):
      s = stride if isinstance(stride, int) else stride[0]
      if (impl == "lax" and x.ndim == 4 and padding == "SAME" and groups == 1 and dilation in (1, (1, 1))
          and s > 1 and stride in (s, (s, s), [s, s])):
        return make_lax_col2im_dx(s, tuple(w.shape[:2]), real_conv)(x, w)
      return real_conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       impl=impl)
    return _patched(ops, "conv", conv), "product"
  if name == "xla_conv_grad":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "applies", lambda geo, batch: False), "product"
  if name in ("gemm_dw_strided", "gemm_dw_strided_small"):
    from jaxseg.ops import conv_grad
    import jax

    def applies(geo, batch):
      if geo.groups != 1 or jax.default_backend() != "cpu":
        return False
      rows = batch * conv_grad.prod(geo.out_shape)
      return any(s > 1 for s in geo.stride) or (name.endswith("small") and rows <= 2**14)
    return _patched(conv_grad, "applies", applies), "product"
  if name == "elu_custom_jvp":   # adopted: this is jaxseg.models.layers.elu now
    import importlib
    unet = importlib.import_module("jaxseg.models.unet")
    return _patched_item(unet._ACTIVATIONS, "elu", layers.elu), "product"
  if name == "elu_autodiff":
    import importlib
    import jax
    unet = importlib.import_module("jaxseg.models.unet")
    return _patched_item(unet._ACTIVATIONS, "elu", jax.nn.elu), "product"
  if name == "small_im2col_fwd":
    from jaxseg.ops import conv_grad
    from jaxseg.ops.conv import conv_im2col, conv_lax

    def forward(x, w, geo):
      return conv_im2col(x, w, geo) if conv_grad._small(geo) else conv_lax(x, w, geo)
    return _patched(conv_grad, "_forward", forward), "product"
  if name == "upconv_d2s":
    from jaxseg.ops import phase
    return _patched(phase, "ROWS", False), "product"
  if name == "ce_unrolled":
    import jax
    import jax.numpy as jnp
    from jaxseg import losses

    def ce(logits, labels, *, class_weights=None):
      zs = [logits[..., c] for c in range(logits.shape[-1])]
      m = functools.reduce(jnp.maximum, zs)
      lse = m + jnp.log(sum(jnp.exp(z - m) for z in zs))
      zy = sum(jnp.where(labels == c, z, 0.0) for c, z in enumerate(zs))
      return jnp.mean(lse - zy)
    return _patched_item(losses._BY_NAME, "ce", ce), "product"
  if name == "small_xla_dw":
    from jaxseg.ops import conv_grad
    real = conv_grad.applies
    return _patched(conv_grad, "applies", lambda geo, batch: real(geo, batch) and not conv_grad._small(geo)), "product"
  if name in ("single_channel_fma", "single_channel_fma_gemm"):
    import jax
    from jaxseg.ops import conv_grad
    from jaxseg.ops.conv import conv_lax, tap_slices
    real = layers.conv_lax_tuned

    def fma(x, w, geo):
      wt = w.reshape(len(geo.taps), -1)
      return sum(s * wt[t] for t, s in enumerate(tap_slices(x, geo)))

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv1(x, w, geo):
      return fma(x, w, geo)

    def fwd(x, w, geo):
      return fma(x, w, geo), (x, w)

    def bwd(geo, res, g):
      x, w = res
      dx = jax.vjp(lambda v: conv_lax(v, w, geo), x)[1](g)[0]
      if name.endswith("gemm"):
        return dx, conv_grad.weight_grad(x, g, geo)
      return dx, jax.vjp(lambda v: conv_lax(x, v, geo), w)[1](g)[0]
    conv1.defvjp(fwd, bwd)

    def tuned(x, w, geo):
      if geo.cin == 1 and geo.groups == 1:
        return conv1(x, w, geo)
      return real(x, w, geo)
    return _patched(layers, "conv_lax_tuned", tuned), "product"
  if name == "strided_dx_xla":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "COL2IM_DX", False), "product"
  if name == "elu_from_output":
    import importlib
    import jax
    import jax.numpy as jnp
    unet = importlib.import_module("jaxseg.models.unet")

    @jax.custom_jvp
    def elu(x):
      return layers.elu(x)

    @elu.defjvp
    def _elu_jvp(primals, tangents):   # layers.elu's rule with the test on y instead of x
      (x,), (t,) = primals, tangents
      y = elu(x)
      return y, t * jnp.where(y > 0, jnp.ones((), y.dtype), y + 1)
    return _patched_item(unet._ACTIVATIONS, "elu", elu), "product"
  if name == "relu_from_output":
    import importlib
    import jax
    import jax.numpy as jnp
    fcn = importlib.import_module("jaxseg.models.fcn")

    @jax.custom_jvp
    def relu(x):
      return jnp.maximum(x, 0)

    @relu.defjvp
    def _relu_jvp(primals, tangents):
      (x,), (t,) = primals, tangents
      y = relu(x)
      return y, jnp.where(y > 0, t, jnp.zeros((), t.dtype))

    class _NN:
      def __getattr__(self, k):
        return relu if k == "relu" else getattr(fcn.nn, k)
    return _patched(fcn, "nn", _NN()), "product"
  if name == "dw_patches_small_form":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "SMALL_PATCH", 10**9), "product"
  if name == "dw_patches_rows":
    import jax.numpy as jnp
    from jaxseg.ops import conv_grad
    from jaxseg.ops.conv import tap_slices
    real = conv_grad.weight_grad

    def weight_grad(x, g, geo):
      if conv_grad._small(geo):
        return real(x, g, geo)
      cols = jnp.stack(tap_slices(x, geo), -2).reshape(-1, len(geo.taps) * geo.cin)
      return (cols.T @ g.reshape(-1, geo.cout)).reshape(geo.kernel + (geo.cin, geo.cout))
    return _patched(conv_grad, "weight_grad", weight_grad), "product"
  if name == "gemm_dw_all":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "applies", lambda geo, batch: geo.groups == 1), "product"
  if name == "xla_small_convs":
    from jaxseg.ops import cpu_conv
    return _patched(cpu_conv, "applies", lambda geo, dtype=None: False), "product"
  if name == "no_winograd":
    from jaxseg.ops import winograd
    return _patched(winograd, "ENABLED", False), "product"
  if name.startswith("winograd_"):  # winograd_C_P: C_in, C_out >= C, <= P^2 output pixels
    from jaxseg.ops import winograd
    c, px = (int(v) for v in name[len("winograd_"):].split("_"))

    @contextlib.contextmanager
    def both():
      with _patched(winograd, "MIN_CHANNELS", c), _patched(winograd, "MAX_TILE_PIXELS", px * px):
        yield
    return both(), "product"
  if name == "stride1_xla_dw":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "MAX_ROWS_STRIDE1", 0), "product"
  if name == "stride1_gemm_dw":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "STRIDE1_SMALL_ONLY", False), "product"
  if name == "strided_dx_col2im_gemm":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "KERNEL_DX", False), "product"
  if name == "strided_dw_kernel":
    from jaxseg.ops import conv_grad, cpu_conv
    real = conv_grad.weight_grad

    def weight_grad(x, g, geo):
      if any(st > 1 for st in geo.stride) and cpu_conv.supports(geo, x.dtype) and cpu_conv.available():
        return cpu_conv._vary_like(cpu_conv._weight_grad(x, g, geo), x)
      return real(x, g, geo)
    return _patched(conv_grad, "weight_grad", weight_grad), "product"
  if name == "strided_fwd_kernel":
    from jaxseg.ops import conv_grad
    return _patched(conv_grad, "KERNEL_FORWARD", True), "product"
  if name.startswith("cpu_conv_upto_"):  # cpu_conv_upto_C_P: Cin*Cout <= C^2, pixels >= P^2
    from jaxseg.ops import cpu_conv
    c, px = (int(v) for v in name[len("cpu_conv_upto_"):].split("_"))

    @contextlib.contextmanager
    def both():
      with _patched(cpu_conv, "MAX_CHANNEL_PRODUCT", c * c), _patched(cpu_conv, "MIN_PIXELS", px * px):
        yield
    return both(), "product"
  raise SystemExit(f"unknown variant {name}")


def _same_settings_as_the_command():
  """XLA_FLAGS and huge pages as `jaxseg bench` has them (before JAX is imported)."""
  import os
  from jaxseg import hugepages, xla_flags
  xla_flags.apply()
  if hugepages.wanted():
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, hugepages.environ_with_tunable(os.environ))


def main(argv=None):
  if argv is None:
    _same_settings_as_the_command()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="fcn")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--variants", default="base,upscore_col2im")
  args = p.parse_args(argv)
  import os
  from jaxseg.bench.train import prepare_train, time_steps
  names = args.variants.split(",")
  steps, infos = {}, {}
  for name in names:
    ctx, kind = variant(name)
    with ctx:  # traced and compiled inside prepare_train
      steps[name], infos[name] = prepare_train(args.model, batch_size=args.batch_size,
                                               image_size=args.image_size, step_kind=kind)
    time_steps(steps[name], 1)
    print(f"{name}: compiled in {infos[name]['compile_seconds']:.1f}s, "
          f"XLA {infos[name].get('xla_gflop_per_step', 0):.1f} GFLOP/step", file=sys.stderr)
  times = {n: [] for n in names}
  order = list(names)
  for _ in range(args.rounds):
    for n in order:
      times[n] += time_steps(steps[n], args.steps)
    order = order[1:] + order[:1]
  base = statistics.median(times[names[0]])
  print(f"{args.model}, batch {args.batch_size}, {args.image_size}^2, load {os.getloadavg()[0]:.2f}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
  print("| variant | median step s | min s | vs first | XLA GFLOP/step |")
  print("|---|---|---|---|---|")
  for n in names:
    med = statistics.median(times[n])
    print(f"| {n} | {med:.4f} | {min(times[n]):.4f} | {med / base:.2f}x "
          f"| {infos[n].get('xla_gflop_per_step', 0):.1f} |")
  print(json.dumps({n: statistics.median(t) for n, t in times.items()}))


if __name__ == "__main__":
  main()
