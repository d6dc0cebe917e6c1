"""The 3-D train bench: unet3d_small in jaxseg and PyTorch, same network, step time and memory."""

import json

import jax
import numpy as np
import pytest

from jaxseg import cli, models
from jaxseg.bench import peers


def _jaxseg_to_torch(params, net):
  """Copies jaxseg's unet3d_small weights into the PyTorch peer (NDHWC kernels -> NCDHW)."""
  import torch
  conv = lambda k: np.transpose(k, (4, 3, 0, 1, 2))      # (kD, kH, kW, Cin, Cout) -> (Cout, Cin, ...)
  upconv = lambda k: np.transpose(k, (4, 3, 0, 1, 2))    # (kD, kH, kW, Cout, Cin) -> (Cin, Cout, ...)
  pairs = []
  names = [f"down{i}" for i in range(3)] + ["bottom"]
  for i, name in enumerate(names):
    block = net.down[i]
    pairs += [(block[0], params[f"{name}_conv1"], conv), (block[3], params[f"{name}_conv2"], conv),
              (block[1], params[f"{name}_norm1"], None), (block[4], params[f"{name}_norm2"], None)]
  for j, level in enumerate(reversed(range(3))):
    name = f"up{level}"
    block = net.dec[j]
    pairs += [(net.up[j], params[f"{name}_upconv"], upconv),
              (block[0], params[f"{name}_conv1"], conv), (block[3], params[f"{name}_conv2"], conv),
              (block[1], params[f"{name}_norm1"], None), (block[4], params[f"{name}_norm2"], None)]
  pairs.append((net.head, params["head"], conv))
  with torch.no_grad():
    for module, p, layout in pairs:
      if layout is None:  # instance norm
        module.weight.copy_(torch.from_numpy(np.asarray(p["scale"])))
      else:
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(layout(np.asarray(p["kernel"])))))
      module.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))


def test_torch_unet3d_small_is_the_same_network():
  torch = pytest.importorskip("torch")
  net = peers.torch_model("unet3d_small")
  assert sum(p.numel() for p in net.parameters()) == 1_401_986
  model = models.create("unet3d_small")
  x = np.random.default_rng(0).normal(size=(1, 8, 16, 24, 1)).astype(np.float32)
  rng = np.random.default_rng(1)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(x.shape, x.dtype))
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), shapes)["params"]
  _jaxseg_to_torch(params, net)
  expected = np.asarray(jax.jit(model.apply)({"params": params}, x))
  with torch.no_grad():
    got = net.eval()(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))).numpy()
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(got.transpose(0, 2, 3, 4, 1), expected, rtol=2e-3, atol=2e-3)


def test_train_bench_of_a_3d_model_takes_a_patch(capsys):
  status = cli.main(["bench", "--what", "train", "--model", "unet3d_small", "--patch-size", "8,16,16",
                     "--batch-size", "1", "--steps", "1", "--warmup", "0", "--json"])
  out = capsys.readouterr().out
  assert status == 0
  res = json.loads(out.strip().splitlines()[-1])
  assert res["image_size"] == [8, 16, 16] and res["batch_size"] == 1 and res["step_seconds"] > 0
  assert res["params"] == 1_401_986
  assert "8x16x16" in out


@pytest.mark.parametrize("argv,flag", [
    (["--model", "unet3d_small", "--patch-size", "8,16"], "--patch-size"),
    (["--model", "unet3d_small", "--patch-size", "0,16,16"], "--patch-size"),
    (["--model", "fcn", "--patch-size", "8,16,16"], "--patch-size"),
])
def test_bad_patch_sizes_exit_2_naming_the_flag(argv, flag, capsys):
  status = cli.main(["bench", "--what", "train", *argv])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1 and flag in err[0], err


@pytest.mark.slow
def test_peers_run_unet3d_small_in_jaxseg_and_torch_interleaved(capsys):
  pytest.importorskip("torch")
  status = cli.main(["bench", "--what", "train", "--model", "unet3d_small", "--peers",
                     "--patch-size", "8,16,16", "--batch-size", "1", "--steps", "1", "--rounds", "2",
                     "--warmup", "0", "--json"])
  out = capsys.readouterr().out
  assert status == 0
  res = json.loads(out.strip().splitlines()[-1])
  fw = res["peers"]["frameworks"]
  assert set(fw) == {"jaxseg", "torch"} and res["peers"]["params_match"]
  assert fw["jaxseg"]["params"] == fw["torch"]["params"] == 1_401_986
  for r in fw.values():
    assert len(r["times"]) == 2 and r["step_seconds"] > 0
    assert 0 < r["rss_before_steps_mb"] <= r["step_peak_rss_mb"] <= r["peak_rss_mb"] + 1
  assert res["jaxseg_over_torch"] > 0 and len(res["peers"]["jaxseg_over_torch_per_round"]) == 2
