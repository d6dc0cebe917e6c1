"""experiments/teach/walkthrough.py runs (its own asserts hold) and writes the numbers it should."""

import importlib.util
import pathlib
import re
import sys

import numpy as np

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "teach" / "walkthrough.py"


def _load():
  spec = importlib.util.spec_from_file_location("walkthrough", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules["walkthrough"] = module     # Flax's dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


# One test runs the script (a module fixture would run once per xdist worker);
# the checks are split into functions for readable failures.
def test_walkthrough_runs_and_prints_computed_numbers(tmp_path):
  module = _load()
  assert module.main(["--out", str(tmp_path)]) == 0     # every step's assert ran
  md = (tmp_path / "walkthrough.md").read_text()
  walkthrough = (module, tmp_path, md)
  check_document_and_figures(walkthrough)
  check_seed_output_and_matrix_shape(walkthrough)
  check_pooling_table_counts(walkthrough)
  check_checkerboard_table(walkthrough)
  check_transpose_counts(walkthrough)


def check_document_and_figures(walkthrough):
  import matplotlib.image as mpimg
  _, out, md = walkthrough
  for name in ("filter_matrices.png", "checkerboard.png"):
    img = mpimg.imread(out / name)
    assert img.ndim == 3 and min(img.shape[:2]) >= 200
    assert float(img[..., :3].std()) > 0.01
    assert f"]({name})" in md
  for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
    assert heading in md


def check_seed_output_and_matrix_shape(walkthrough):
  _, _, md = walkthrough
  # The 000_* slide's output, printed by each of the four ways.
  assert md.count(" 0 -3  2\n-1 -4 -4\n 0  0 -3") >= 2
  assert "W of shape 9 x 25" in md and "81 stored entries out of 225" in md


def check_pooling_table_counts(walkthrough):
  _, _, md = walkthrough
  # Hand-computed: 5*5*3*8+8, 5*5*8*16+16, 400*120+120, 120*84+84, 84*10+10.
  for name, count in (("Conv_0", "608"), ("Conv_1", "3,216"), ("Dense_0", "48,120"),
                      ("Dense_1", "10,164"), ("Dense_2", "850")):
    line = next(l for l in md.splitlines() if f"({name})" in l)
    assert f"| {count} |" in line, line
  # The slide's own formula (one bias per layer) reproduces the slide's numbers.
  for slide in ("48,001", "10,081", "841"):
    assert f"| {slide} |" in md
  assert "Total: 62,958 parameters" in md      # 608+3216+48120+10164+850
  # The lab's FCN (DESIGN.md: 1,862,648) has the same count at any input size.
  assert "| `fcn` | 1,862,648 | 1,862,648 |" in md


def check_checkerboard_table(walkthrough):
  _, _, md = walkthrough
  # Transposed 3x3 stride-2 conv of ones: phases 4, 2, 2, 1 -> std 1.0897 / rms 2.5 = 0.436.
  assert re.search(r"\| ones 3x3 \| 24x24 \| 0\.436 \| 0\.000 \| 4 / 2 / 2 / 1 \|", md)
  assert re.search(r"\| ones 4x4 \| 24x24 \| 0\.000 \| 0\.000 \| 4 / 4 / 4 / 4 \|", md)


def test_phase_artifact_measure():
  module = _load()
  checker = np.tile(np.array([[4.0, 2.0], [2.0, 1.0]]), (6, 6))
  value, phases = module.phase_artifact(checker, border=0)
  np.testing.assert_allclose(phases, [[4, 2], [2, 1]])
  np.testing.assert_allclose(value, np.std([4, 2, 2, 1]) / np.sqrt(np.mean([16, 4, 4, 1])), rtol=1e-6)
  assert module.phase_artifact(np.full((10, 10), 3.0))[0] == 0.0


def check_transpose_counts(walkthrough):
  _, _, md = walkthrough
  # 8x8 input, 3x3 kernel, stride 2, SAME (pads 0, 1): W is 16 x 64.
  assert "W is 16 x 64" in md and "W^T is 64 x 16" in md
  assert "counts are 1, 2, 4" in md
