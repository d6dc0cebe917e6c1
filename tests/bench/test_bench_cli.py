"""`jaxseg bench` on tiny shapes: JSON keys, the --peers gate, flag errors."""

import json
import sys

import pytest

from jaxseg import cli


def _last_json(out):
  return json.loads(out.strip().splitlines()[-1])


def test_train_json_has_step_seconds(capsys):
  status = cli.main(["bench", "--what", "train", "--model", "cnn3", "--image-size", "32",
                     "--batch-size", "2", "--steps", "2", "--warmup", "1", "--json"])
  assert status == 0
  res = _last_json(capsys.readouterr().out)
  assert res["step_seconds"] > 0 and res["step_seconds_min"] <= res["step_seconds"]
  assert res["images_per_second"] == pytest.approx(2 / res["step_seconds"])
  assert (res["model"], res["batch_size"], res["image_size"]) == ("cnn3", 2, 32)
  for key in ("peak_rss_mb", "device_kind", "platform", "compile_seconds", "load_avg"):
    assert key in res
  from jaxseg.ops import cpu
  assert res["cpu_conv_kernels"] == cpu.available()   # the header says whether they ran
  assert res["conv_impl"] == "auto"                   # the models' default


def test_peers_without_torch_is_one_line_exit_2(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  status = cli.main(["bench", "--what", "train", "--model", "fcn", "--peers", "--json"])
  assert status == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and "torch" in err[0] and "[peers]" in err[0]
  assert captured.out == ""  # failed before any work


@pytest.mark.parametrize("argv, flag", [
    (["--impls", "lax,nope"], "--impls"),
    (["--steps", "0"], "--steps"),
    (["--what", "conv", "--patch-size", "8,8,8"], "--patch-size"),   # cnn3 is a 2-D model
])
def test_bad_flags_exit_2_naming_the_flag(argv, flag, capsys):
  assert cli.main(["bench", "--model", "cnn3", *argv]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and flag in err[0]


def test_conv_json_rows_have_hand_flops_and_times(capsys):
  # lax only (the wrong-impl gate is tested in test_bench_conv.py): fewer compiles.
  status = cli.main(["bench", "--what", "conv", "--model", "cnn3", "--impls", "lax",
                     "--image-size", "8", "--batch-size", "1", "--steps", "1", "--warmup", "0",
                     "--gemm-sizes", "64", "--json"])
  assert status == 0
  res = _last_json(capsys.readouterr().out)
  rows = res["rows"]
  # cnn3: 3x3 convs 1->8, 8->16, 16->2 at 8x8; each row has a FLOP count by the hand formula.
  assert [r["flops_fwd"] for r in rows if r["impl"] == "lax"] == [
      2 * 8 * 8 * 8 * 9 * 1, 2 * 8 * 8 * 16 * 9 * 8, 2 * 8 * 8 * 2 * 9 * 16]
  assert {r["status"] for r in rows} == {"ok"} and res["wrong"] == []
  assert all(r["fwdbwd_s"] > 0 and r["max_rel_error"] <= 5e-3 for r in rows)
  assert res["gemm_peak_gflops"] > 0


def test_peer_models_are_the_same_architectures():
  torch = pytest.importorskip("torch")
  from jaxseg.bench import peers
  count = lambda m: sum(p.numel() for p in m.parameters())
  # The parameter counts that identify the seeds' models (DESIGN.md).
  assert count(peers.torch_model("fcn")) == 1_862_648
  assert count(peers.torch_model("unet_small", in_channels=3, num_classes=1)) == 1_941_105
  x = torch.zeros(1, 1, 64, 64)
  assert tuple(peers.torch_model("fcn")(x).shape) == (1, 2, 64, 64)
