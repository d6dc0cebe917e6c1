"""`jaxseg explain` against the 000_* worked example and hand-built matrices.

`jaxseg.teach` computes (tested with values), `jaxseg.commands.explain`
checks the flags and `explain_output` prints and draws (tested through the command).
"""

import json
import subprocess
import sys

import chex
import numpy as np
import pytest

from jaxseg import cli, teach
from jaxseg.commands import explain as explain_cmd
from jaxseg.errors import ConfigError

# Hand-copied from the 000_* lecture: input, filter and the 3x3 VALID output.
SEED_X = np.array([[0, 1, 0, 2, 2],
                   [1, 2, 2, 1, 2],
                   [2, 2, 1, 0, 0],
                   [2, 1, 2, 2, 1],
                   [0, 0, 0, 1, 0]], float)
SEED_W = np.array([[-1, 1, 0], [-1, 0, 1], [0, -1, 0]], float)
SEED_Y = np.array([[0, -3, 2],
                   [-1, -4, -4],
                   [0, 0, -3]], float)
# The zero-padded (SAME) 5x5 output: rows 0-3 as on the lecture's slide (its
# last row is garbled in the text); row 4 by hand: e.g. y[4,0] = 1*2 + 0*1 = 2.
SEED_Y_SAME = np.array([[0, -2, -1, 1, -4],
                        [0, 0, -3, 2, -1],
                        [1, -1, -4, -4, 0],
                        [3, 0, 0, -3, -2],
                        [2, -1, 2, 0, -2]], float)


def _explain(capsys, *flags):
  assert cli.main(["explain", *flags, "--json"]) == 0
  out = capsys.readouterr().out
  lines = out.strip().splitlines()
  return lines, json.loads(lines[-1])


def _loop_matrix(x_hw, w, stride, pads, dilation=(1, 1)):
  """W by plain loops: row = output pixel*Cout + o, column = input pixel*Cin + c."""
  h, wd = x_hw
  kh, kw, cin, cout = w.shape
  oh = (h + sum(pads[0]) - (kh - 1) * dilation[0] - 1) // stride[0] + 1
  ow = (wd + sum(pads[1]) - (kw - 1) * dilation[1] - 1) // stride[1] + 1
  W = np.zeros((oh * ow * cout, h * wd * cin))
  for i in range(oh):
    for j in range(ow):
      for a in range(kh):
        for b in range(kw):
          r = i * stride[0] + a * dilation[0] - pads[0][0]
          c = j * stride[1] + b * dilation[1] - pads[1][0]
          if 0 <= r < h and 0 <= c < wd:
            for ci in range(cin):
              for o in range(cout):
                W[(i * ow + j) * cout + o, (r * wd + c) * cin + ci] += w[a, b, ci, o]
  return W


def test_default_prints_the_seed_output(capsys):
  lines, res = _explain(capsys)
  chex.assert_trees_all_close(np.array(res["y"]), SEED_Y, atol=1e-6)
  assert res["W_shape"] == [9, 25]
  assert res["nnz"] == 81          # 9 outputs x 9 taps, all inside the image
  # The printed block: W @ x, direct and lax side by side, each equal to the seed's matrix.
  start = next(i for i, l in enumerate(lines) if l.startswith("y = W x"))
  for row, line in zip(SEED_Y, lines[start + 2:start + 5]):
    assert [float(t) for t in line.split()] == list(row) * 3
  # The input as a vector, and the first row of W with '.' for structural zeros.
  assert "0 1 0 2 2 | 1 2 2 1 2 | 2 2 1 0 0 | 2 1 2 2 1 | 0 0 0 1 0" in "\n".join(lines)
  w_row = next(l for l in lines if l.strip().startswith("y[0,0]"))
  assert w_row.split()[1:] == ("-1 1 0 . . | -1 0 1 . . | 0 -1 0 . . | . . . . . | . . . . .").split()


def test_same_padding_matches_the_zero_padded_slide(capsys):
  _, res = _explain(capsys, "--padding", "SAME")
  chex.assert_trees_all_close(np.array(res["y"]), SEED_Y_SAME, atol=1e-6)
  assert res["W_shape"] == [25, 25]
  assert res["nnz"] == 13 * 13     # per axis 5 outputs x 3 taps minus 2 that fall on padding


@pytest.mark.parametrize("flags,shape", [
    (("--stride", "2"), [4, 25]),                                          # VALID: (5-3)//2+1 = 2
    (("--stride", "2", "--padding", "SAME"), [9, 25]),                     # SAME: ceil(5/2) = 3
    (("--size", "6,7", "--stride", "2", "--padding", "SAME"), [12, 42]),   # 3 x 4 outputs
    (("--size", "6,7", "--stride", "2"), [6, 42]),                         # 2 x 3
    (("--size", "6,7", "--stride", "1,3"), [8, 42]),                       # 4 x 2
    (("--padding", "1"), [25, 25]),                                        # explicit 1: 5x5
    (("--padding", "0,0,2,1"), [18, 25]),                                  # 3 x (5+2+1-3+1) = 3 x 6
    (("--dilation", "2"), [1, 25]),                                        # 5x5 effective kernel
    (("--in-channels", "2", "--out-channels", "3", "--input", "random"), [27, 50]),
])
def test_w_shape_for_stride_padding_flags(capsys, flags, shape):
  _, res = _explain(capsys, *flags)
  assert res["W_shape"] == shape


@pytest.mark.parametrize("kw", [
    dict(),
    dict(padding="SAME", stride="2", size="6"),
    dict(padding="1,0,2,1", stride="2,1", dilation="1,2", size="6,7", in_channels=2, out_channels=2,
         kernel="sobel_x"),
])
def test_transpose_equals_conv_transpose_equals_vjp(kw):
  ex = explain_cmd.example_from_flags(**kw)
  r = teach.explain(ex)
  W_ref = _loop_matrix(ex.x.shape[1:3], ex.w, ex.stride, ex.pads, ex.dilation)
  chex.assert_trees_all_close(r["W"], W_ref, atol=1e-6)
  y_ref = W_ref @ ex.x[0].reshape(-1)
  chex.assert_trees_all_close(r["y_matrix"].reshape(-1), y_ref, atol=1e-5)
  wty_ref = (W_ref.T @ y_ref).reshape(ex.x.shape[1:])
  assert r["conv_transpose"] is not None
  for name in ("wty", "conv_transpose", "vjp"):
    chex.assert_trees_all_close(r[name], wty_ref, atol=1e-4, rtol=1e-5)
  # im2col: the patch matrix times the reshaped kernel is y again.
  chex.assert_trees_all_close(r["im2col"].reshape(-1), y_ref, atol=1e-5)


def test_im2col_patch_rows_are_the_neighbourhoods():
  r = teach.explain(teach.seed_example())
  assert r["patches"].shape == (9, 9)
  np.testing.assert_array_equal(r["patches"][0], SEED_X[:3, :3].reshape(-1))
  np.testing.assert_array_equal(r["patches"][5], SEED_X[1:4, 2:5].reshape(-1))
  np.testing.assert_array_equal(r["kmat"][:, 0], SEED_W.reshape(-1))


def test_named_and_literal_kernels():
  np.testing.assert_array_equal(explain_cmd.parse_kernel("sobel_x"), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
  np.testing.assert_array_equal(explain_cmd.parse_kernel("smooth"), [[0.25, 0.5, 0.25]])
  np.testing.assert_array_equal(explain_cmd.parse_kernel("1,0,-1;2,0,-2"), [[1, 0, -1], [2, 0, -2]])
  # The 002_* example: the 3x3 ramp image and the y Sobel filter give -24 in the centre,
  # from the flags and from the values.
  r = teach.explain(explain_cmd.example_from_flags(size="3", input="ramp", kernel="sobel_y", padding="VALID"))
  assert r["y_matrix"].reshape(-1).tolist() == [-24.0]
  ramp = teach.named_input("ramp", (3, 3))
  np.testing.assert_array_equal(ramp[0, ..., 0], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
  r = teach.explain(teach.make_example(ramp, teach.KERNELS["sobel_y"]))
  assert r["y_matrix"].reshape(-1).tolist() == [-24.0]


def test_make_example_from_values():
  ex = teach.make_example(teach.named_input("ramp", (6, 7), 2), teach.KERNELS["sobel_x"], out_channels=3,
                          stride=2, padding=((1, 0), (2, 1)), dilation=(1, 2))
  assert ex.stride == (2, 2) and ex.dilation == (1, 2) and ex.pads == ((1, 0), (2, 1))
  assert ex.w.shape == (3, 3, 2, 3)
  # Channel pair (i, o) is the kernel times 1 + i*Cout + o.
  np.testing.assert_array_equal(ex.w[:, :, 1, 2], 6 * teach.KERNELS["sobel_x"])
  # (6 + 1 + 0 - 3) // 2 + 1 = 3 rows, (7 + 2 + 1 - 5) // 2 + 1 = 3 columns.
  assert ex.out_hw == (3, 3) and ex.dense_entries == 3 * 3 * 3 * 6 * 7 * 2
  assert teach.seed_example().out_hw == (3, 3)
  np.testing.assert_array_equal(teach.seed_example().x[0, ..., 0], SEED_X)


@pytest.mark.parametrize("x,kernel", [
    (np.zeros((1, 2, 2, 1), np.float32), np.ones((3, 3), np.float32)),         # empty output
    (np.zeros((1, 200, 200, 1), np.float32), np.ones((3, 3), np.float32)),     # 198^2 x 200^2 > 4e6
])
def test_explain_refuses_empty_or_too_large_examples(x, kernel):
  with pytest.raises(ConfigError):
    teach.explain(teach.make_example(x, kernel))


def test_out_writes_pngs_that_load(tmp_path, capsys):
  import matplotlib.image as mpimg
  out = tmp_path / "figs"
  _explain(capsys, "--out", str(out))
  for name in ("w_sparsity.png", "im2col.png", "shapes.png"):
    path = out / name
    assert path.stat().st_size > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 200
    assert float(img[..., :3].std()) > 0.01      # not a blank canvas


@pytest.mark.parametrize("flags", [
    ["--kernel", "1,0,-1;2,0"],
    ["--kernel", "nosuchkernel"],
    ["--padding", "sideways"],
    ["--size", "2"],
    ["--stride", "0"],
])
def test_bad_flags_are_one_line_user_errors(flags, capsys):
  assert cli.main(["explain", *flags]) == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith("jaxseg explain: error: --")


def test_bad_kernel_literal_exits_2_with_one_line():
  r = subprocess.run([sys.executable, "-m", "jaxseg", "explain", "--kernel", "1,0;x"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2
  assert r.stderr.strip() == ("jaxseg explain: error: --kernel '1,0;x': not a name or a literal "
                              "like '1,0,-1;2,0,-2'")
