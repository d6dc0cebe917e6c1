"""Keras-style summaries: rows, totals, and the `jaxseg summary` command."""

import json
import os
import subprocess
import sys

import pytest

from jaxseg import models
from jaxseg.models.summary import count_params, layer_rows, summarize

# The lab's FCN summary (003_*.txt), row by row: (name, output shape, params).
LAB_FCN = [
    ("Conv1", (None, 128, 128, 100), 2600),
    ("max_pooling2d", (None, 64, 64, 100), 0),
    ("conv2d", (None, 32, 32, 200), 500200),
    ("max_pooling2d_1", (None, 16, 16, 200), 0),
    ("conv2d_1", (None, 16, 16, 300), 540300),
    ("conv2d_2", (None, 16, 16, 300), 810300),
    ("conv2d_3", (None, 16, 16, 2), 5402),
    ("conv2d_transpose", (None, 256, 256, 2), 3846),
]


def test_fcn_rows_are_the_labs_keras_summary():
  rows = layer_rows(models.create("fcn"), (1, 256, 256, 1))
  assert [(r.name, r.output_shape, r.params) for r in rows] == LAB_FCN


def test_dense_rows_and_table_total():
  model = models.create("dense")
  rows = layer_rows(model, (1, 256, 256, 1))
  assert [(r.type, r.output_shape, r.params) for r in rows] == [
      ("Flatten", (None, 65536), 0), ("Dense", (None, 64), 4194368),
      ("Dense", (None, 131072), 8519680), ("Reshape", (None, 256, 256, 2), 0)]
  assert summarize(model, (1, 256, 256, 1)).splitlines()[-2] == "Total params: 12,714,048"


@pytest.mark.parametrize("name,shape,kw", [
    ("unet_small", (1, 64, 64, 3), {"in_channels": 3, "num_classes": 1}),
    ("unet", (1, 188, 188, 1), {"base": 4}),
    ("unet3d", (1, 16, 16, 16, 2), {"base": 2, "depth": 2, "in_channels": 2}),
    ("fcn_deep", (1, 64, 64, 1), {}),
])
def test_rows_add_up_to_the_total(name, shape, kw):
  model = models.create(name, **kw)
  rows = layer_rows(model, shape)
  total = count_params(model, shape)
  assert sum(r.params for r in rows) == total
  assert f"Total params: {total:,}" in summarize(model, shape)
  assert rows[-1].output_shape == (None,) + rows[-1].output_shape[1:-1] + (kw.get("num_classes", 2),)


def test_unet_small_total_is_the_talks_count():
  text = summarize(models.create("unet_small", in_channels=3, num_classes=1), (1, 256, 256, 3))
  assert "Total params: 1,941,105" in text
  assert "up0_concat (CenterCropConcat)" in text and "(None, 256, 256, 32)" in text


def _jaxseg(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "jaxseg", "summary", *args], env=env,
                        capture_output=True, text=True, timeout=300)


def test_summary_command_prints_the_fcn_count_and_json():
  text = _jaxseg("--model", "fcn")
  assert text.returncode == 0, text.stderr
  assert "Total params: 1,862,648" in text.stdout
  assert "conv2d_transpose (ConvTranspose)" in text.stdout
  js = _jaxseg("--model", "dense", "--image-size", "32", "--json")
  assert js.returncode == 0, js.stderr
  out = json.loads(js.stdout.strip().splitlines()[-1])
  assert out["total_params"] == 32 * 32 * 64 + 64 + 64 * 2048 + 2048
  assert [l["params"] for l in out["layers"]] == [0, 32 * 32 * 64 + 64, 64 * 2048 + 2048, 0]
  assert out["layers"][-1]["output_shape"] == [None, 32, 32, 2]


def test_summary_command_unknown_model_is_one_line_and_exit_2():
  res = _jaxseg("--model", "resnet")
  assert res.returncode == 2
  assert res.stderr.strip().count("\n") == 0 and "unknown model 'resnet'" in res.stderr
