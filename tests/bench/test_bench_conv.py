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


def test_wrong_impl_is_caught_before_timing(monkeypatch):
  real_conv = jaxseg.ops.conv

  def broken(x, w, *, impl="lax", **kw):
    y = real_conv(x, w, impl="lax", **kw)
    return y * 1.1 if impl == "im2col" else y  # 10% off: must be caught

  monkeypatch.setattr(jaxseg.ops, "conv", broken)
  layer = layers_lib.table_layers("fcn", batch=1, image_size=32)[2]  # 2x2x200 -> 300, 3x3
  rows = conv_lib.bench_layer(layer, ["lax", "im2col"], steps=1, warmup=0, budget=None,
                              peak_gflops=None)
  by_impl = {r["impl"]: r for r in rows}
  assert by_impl["lax"]["status"] == "ok" and by_impl["lax"]["fwdbwd_s"] > 0
  assert by_impl["im2col"]["status"] == "wrong"
  assert "fwd_s" not in by_impl["im2col"] and "differs from lax" in by_impl["im2col"]["note"]


def test_models_row_is_checked_against_lax_and_runs_the_cpu_kernels():
  # A first layer (taps * C_in <= 64): on a machine with the C++ kernels the
  # models' path runs them; either way it must agree with lax before timing.
  from jaxseg.ops import cpu_conv
  layer = layers_lib.ConvLayer("t", "first", "conv", (2, 40, 40, 1), (5, 5, 1, 20), (2, 20, 20, 20), (2, 2))
  f = conv_lib.layer_fn(layer, conv_lib.MODELS_IMPL)
  x, w, _ = conv_lib.layer_inputs(layer)
  text = jax.jit(f).lower(x, w).as_text()
  assert ("jaxseg_conv_forward" in text) == cpu_conv.available()
  rows = conv_lib.bench_layer(layer, ["lax", conv_lib.MODELS_IMPL], steps=1, warmup=0, budget=None,
                              peak_gflops=100.0)
  models = next(r for r in rows if r["impl"] == conv_lib.MODELS_IMPL)
  assert models["status"] == "ok" and models["max_rel_error"] < 1e-4 and models["fwdbwd_s"] > 0
  assert models["route"] == ("C++ direct conv kernels" if cpu_conv.available() else "XLA")


def test_models_row_names_winograd_where_the_layers_run_it():
  # The FCN's 3x3 200 -> 300 layer on a small image: Winograd on a machine with the kernels,
  # checked against lax like every row (its rounding differs from the direct sum's).
  from jaxseg.ops import cpu_conv
  layer = layers_lib.table_layers("fcn", batch=1, image_size=64)[2]
  assert layer.w_shape == (3, 3, 200, 300)
  x, w, _ = conv_lib.layer_inputs(layer)
  text = jax.jit(conv_lib.layer_fn(layer, conv_lib.MODELS_IMPL)).lower(x, w).as_text()
  assert ("jaxseg_winograd_transform" in text) == cpu_conv.available()
  rows = conv_lib.bench_layer(layer, ["lax", conv_lib.MODELS_IMPL], steps=1, warmup=0, budget=None,
                              peak_gflops=100.0)
  models = rows[1]
  assert models["status"] == "ok" and models["max_rel_error"] < 1e-4
  assert models["route"].startswith("Winograd") == cpu_conv.available()


def test_models_impl_is_refused_for_train(capsys):
  from jaxseg import cli
  status = cli.main(["bench", "--what", "train", "--impls", "models", "--steps", "1"])
  assert status == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--impls models" in err[0]
