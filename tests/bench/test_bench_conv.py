"""The conv bench: FLOP counts, layer shapes, matrix nnz, and the correctness gate."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import jaxseg.ops
from jaxseg.bench import conv as conv_lib
from jaxseg.bench import layers as layers_lib


def test_flops_match_hand_count():
  # fcn conv2 at batch 2, 32x32 input: (2, 8, 8, 100) -> 5x5/2 -> (2, 4, 4, 200).
  layer = {l.name: l for l in layers_lib.table_layers("fcn", batch=2, image_size=32)}["conv2"]
  assert layer.x_shape == (2, 8, 8, 100) and layer.out_shape == (2, 4, 4, 200)
  assert layer.flops == 2 * 2 * 4 * 4 * 200 * 5 * 5 * 100 == 32_000_000
  assert layers_lib.conv_flops(2, (4, 4), 200, (5, 5), 100) == 32_000_000
  # The first conv has one input channel: 2*N*Ho*Wo*Cout*kh*kw*Cin = 2*2*16*16*100*25*1.
  conv1 = layers_lib.table_layers("fcn", batch=2, image_size=32)[0]
  assert conv1.flops == 2_560_000


@pytest.mark.parametrize("model", ["fcn", "unet_small"])
def test_captured_layers_equal_the_architecture_table(model):
  captured = layers_lib.capture_layers(model, batch=2, image_size=32)
  table = layers_lib.dedupe(layers_lib.table_layers(model, batch=2, image_size=32))
  strip = lambda ls: [dataclasses.replace(l, name="") for l in ls]
  assert strip(captured) == strip(table)


def test_matrix_nnz_hand_count_and_conv_matrix():
  # 4x4 input, 3x3 kernel, stride 1, SAME: per axis the 4 outputs see 2, 3, 3, 2 taps.
  layer = layers_lib.ConvLayer("t", "t", "conv", (1, 4, 4, 1), (3, 3, 1, 1), (1, 4, 4, 1), (1, 1))
  assert layers_lib.matrix_nnz(layer) == 10 * 10
  # Stride 2, 5x5, 2 -> 3 channels on 7x7 (SAME pads 2 each side); checked against the real matrix.
  layer = layers_lib.ConvLayer("t", "t", "conv", (1, 7, 7, 2), (5, 5, 2, 3), (1, 4, 4, 3), (2, 2))
  if not hasattr(jaxseg.ops, "conv_matrix"):
    pytest.skip("jaxseg.ops.conv_matrix not available")
  w = jnp.arange(1, 5 * 5 * 2 * 3 + 1, dtype=jnp.float32).reshape(5, 5, 2, 3)
  try:
    m = jaxseg.ops.conv_matrix(w, (1, 7, 7, 2), stride=2, padding="SAME")
  except Exception:
    m = jaxseg.ops.conv_matrix(w, (7, 7, 2), stride=2, padding="SAME")
  assert layers_lib.matrix_nnz(layer) == int((m.todense() != 0).sum())


def test_wrong_impl_is_caught_before_timing():
  # A variant 10% off, passed in as the im2col row's function: it must be reported, never timed.
  layer = layers_lib.table_layers("fcn", batch=1, image_size=32)[2]  # 2x2x200 -> 300, 3x3
  good = conv_lib.layer_fn(layer, "im2col")
  rows = conv_lib.bench_layer(layer, ["lax", "im2col"], steps=1, warmup=0, budget=None,
                              peak_gflops=None, fns={"im2col": lambda x, w: good(x, w) * 1.1})
  by_impl = {r["impl"]: r for r in rows}
  assert by_impl["lax"]["status"] == "ok" and by_impl["lax"]["fwdbwd_s"] > 0
  assert by_impl["im2col"]["status"] == "wrong"
  assert "fwd_s" not in by_impl["im2col"] and "differs from lax" in by_impl["im2col"]["note"]


def test_auto_row_is_checked_against_lax_and_runs_the_cpu_kernels():
  # A first layer (taps * C_in <= 64): on a machine with the C++ kernels the auto route runs
  # them; either way it must agree with lax before timing, and its note names the route.
  from jaxseg.ops import cpu
  layer = layers_lib.ConvLayer("t", "first", "conv", (2, 40, 40, 1), (5, 5, 1, 20), (2, 20, 20, 20), (2, 2))
  f = conv_lib.layer_fn(layer, "auto")
  x, w, _ = conv_lib.layer_inputs(layer)
  text = jax.jit(f).lower(x, w).as_text()
  assert ("jaxseg_conv_forward" in text) == cpu.available()
  rows = conv_lib.bench_layer(layer, ["lax", "auto"], steps=1, warmup=0, budget=None, peak_gflops=100.0)
  auto = next(r for r in rows if r["impl"] == "auto")
  assert auto["status"] == "ok" and auto["max_rel_error"] < 1e-4 and auto["fwdbwd_s"] > 0
  assert auto["route"] == ("cpu_direct: C++ direct conv kernels" if cpu.available() else "gemm_grad: XLA forward, GEMM backward")


def test_auto_row_names_winograd_where_the_layers_run_it():
  # The FCN's 3x3 200 -> 300 layer on a small image: Winograd on a machine with the kernels,
  # checked against lax like every row (its rounding differs from the direct sum's).
  from jaxseg.ops import cpu
  layer = layers_lib.table_layers("fcn", batch=1, image_size=64)[2]
  assert layer.w_shape == (3, 3, 200, 300)
  x, w, _ = conv_lib.layer_inputs(layer)
  text = jax.jit(conv_lib.layer_fn(layer, "auto")).lower(x, w).as_text()
  assert ("jaxseg_winograd_transform" in text) == cpu.available()
  rows = conv_lib.bench_layer(layer, ["lax", "auto"], steps=1, warmup=0, budget=None, peak_gflops=100.0)
  auto = rows[1]
  assert auto["status"] == "ok" and auto["max_rel_error"] < 1e-4
  assert auto["route"].startswith("winograd") == cpu.available()
  # the same layer as seen from a GPU: XLA
  assert conv_lib.auto_route(layer, platform="cuda") == "xla: XLA"


def test_every_impl_is_listed_once_from_the_registry():
  from jaxseg import ops, registry
  assert conv_lib.impls_available("conv") == registry.CONV_IMPLS == ops.CONV_IMPLS
  assert conv_lib.impls_available("conv_transpose") == registry.CONV_TRANSPOSE_IMPLS
  assert "auto" in registry.CONV_IMPLS and {"phase", "auto"} <= set(registry.CONV_TRANSPOSE_IMPLS)


@pytest.mark.parametrize("layer", [
    layers_lib.ConvLayer("t", "c3d", "conv", (2, 5, 6, 7, 3), (3, 3, 3, 3, 8), (2, 5, 6, 7, 8), (1, 1, 1),
                         dilation=(1, 1, 1)),
    layers_lib.ConvLayer("t", "c2d", "conv", (1, 9, 8, 4), (5, 5, 4, 6), (1, 5, 4, 6), (2, 2)),  # SAME/2: pads (1, 2)
    layers_lib.ConvLayer("t", "up3d", "conv_transpose", (1, 2, 3, 4, 8), (2, 2, 2, 4, 8), (1, 4, 6, 8, 4), (2, 2, 2),
                         dilation=(1, 1, 1)),
    layers_lib.ConvLayer("t", "upscore", "conv_transpose", (1, 2, 2, 2), (31, 31, 2, 2), (1, 32, 32, 2), (16, 16)),
], ids=lambda l: l.name)
def test_torch_row_is_the_same_conv(layer):
  # The PyTorch column computes the same layer: its y, dx and dW (back in jaxseg's layouts)
  # agree with lax's, and a torch row appears beside auto, timed in turn with it.
  pytest.importorskip("torch", reason="the PyTorch column needs torch (pip install -e '.[peers]')")
  x, w, ct = conv_lib.layer_inputs(layer)
  step, results = conv_lib.torch_layer_step(layer, x, w, ct)
  step()
  want = jax.jit(conv_lib.fwd_bwd(conv_lib.layer_fn(layer, "lax")))(x, w, ct)
  assert conv_lib.compare(layer, "torch", [jnp.asarray(a) for a in results()], want) < 1e-4
  rows = conv_lib.bench_layer(layer, ["lax", "auto"], steps=1, warmup=0, budget=None, peak_gflops=None,
                              peers=True)
  by = {r["impl"]: r for r in rows}
  assert by["torch"]["status"] == "ok" and by["torch"]["fwdbwd_s"] > 0
  assert by["auto"]["vs_torch_fwdbwd"] == pytest.approx(by["auto"]["fwdbwd_s_in_turn"] / by["torch"]["fwdbwd_s"])
