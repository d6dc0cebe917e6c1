"""Property tests at the command level: random small arrays and random bytes,
written as real files, given to `jaxseg train --data folder:...`.

The outcome is always exit status 2 with one line and no traceback: either the
data error (naming a file of the folder) or, when the data loaded cleanly,
the "--batch-size is larger than the training images" error that comes right
after loading (so no model is built). A NumPy oracle says which of the two
each example must give.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from reliability_helpers import phantom, run_cli, write

SETTINGS = settings(max_examples=int(os.environ.get("JAXSEG_CLI_FUZZ_EXAMPLES", 20)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LOADED = "is larger than the"   # the error right after a clean load (batch 64 > 1 training image)


def _train(capsys, root):
  work = root / "w"
  status, out, err = run_cli(capsys, "train", "--model", "cnn3", "--data", f"folder:{root}",
                             "--batch-size", "64", "--workdir", work, "--quiet")
  assert "Traceback" not in err, err
  assert status == 2, (status, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert not work.exists(), "a failed run wrote its workdir"
  return lines[0]


def _with_valid_case(root):
  """A second, valid case so that one case can be held out for validation."""
  (img, lab), = phantom(1, size=8, seed=9)
  write(root / "images" / "b.nrrd", img)
  write(root / "labels" / "b.nrrd", lab)


@st.composite
def pairs(draw):
  ndim = draw(st.sampled_from([1, 2, 2, 3, 3, 4]))
  shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
  dtype = draw(st.sampled_from([np.uint8, np.int16, np.float32, np.float64]))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  image = (rng.random(shape) * 200).astype(dtype)
  if dtype in (np.float32, np.float64) and image.size and draw(st.booleans()):
    image.flat[draw(st.integers(0, image.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
  label_shape = shape if draw(st.integers(0, 3)) else tuple(s + 1 for s in shape)
  values = draw(st.sampled_from([[0, 1], [0], [0, 255], [0, 1, 2], [-1, 0], [0, 1, 255]]))
  label = np.asarray(values, np.int16)[rng.integers(0, len(values), label_shape)]
  ext = draw(st.sampled_from([".nrrd", ".nii.gz", ".mha"]))
  return image, label, ext


def _should_load(image, label):
  """The oracle: may these arrays load as one case? (NumPy only.)"""
  if image.ndim not in (2, 3) or min(image.shape[-2:]) < 2:
    return False                                   # not 2-D/3-D, or 1-D in disguise
  if not np.all(np.isfinite(image)) or label.shape != image.shape:
    return False
  values = set(np.unique(label).tolist())
  return values <= {0, 1} or (values <= {0, 255} and 255 in values)


@SETTINGS
@given(pairs())
def test_random_arrays_through_the_command(capsys, pair):
  image, label, ext = pair
  root = Path(tempfile.mkdtemp(prefix="jaxseg-fuzz-"))
  try:
    try:
      write(root / "images" / f"a{ext}", image)
      write(root / "labels" / f"a{ext}", label)
    except RuntimeError:
      assume(False)   # SimpleITK cannot store this array in this format: not our input
    _with_valid_case(root)
    line = _train(capsys, root)
    if _should_load(image, label):
      assert LOADED in line, line
    else:
      assert LOADED not in line and str(root) in line, line
  finally:
    shutil.rmtree(root, ignore_errors=True)


def _valid_file(ext):
  with tempfile.TemporaryDirectory() as d:
    path = write(Path(d) / f"v{ext}", np.arange(64, dtype=np.int16).reshape(8, 8))
    return path.read_bytes()


VALID = {ext: _valid_file(ext) for ext in (".nrrd", ".nii.gz", ".mha", ".nii")}


@SETTINGS
@given(ext=st.sampled_from(sorted(VALID) + [".png", ".xyz"]),
       how=st.sampled_from(["random", "truncate", "flip"]),
       data=st.data())
def test_random_bytes_through_the_command(capsys, ext, how, data):
  raw = VALID.get(ext, VALID[".nrrd"])
  if how == "random":
    blob = data.draw(st.binary(min_size=1, max_size=400))
  elif how == "truncate":
    blob = raw[:data.draw(st.integers(1, len(raw) - 1))]
  else:
    blob = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
      blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    blob = bytes(blob)
  root = Path(tempfile.mkdtemp(prefix="jaxseg-fuzz-"))
  try:
    (root / "images").mkdir()
    target = root / "images" / f"a{ext}"
    target.write_bytes(blob)
    write(root / "labels" / "a.nrrd", np.zeros((8, 8), np.uint8))
    _with_valid_case(root)
    line = _train(capsys, root)
    if how == "truncate":
      assert LOADED not in line and str(target) in line, line   # a cut file never loads
    else:
      assert LOADED in line or str(root) in line, line
  finally:
    shutil.rmtree(root, ignore_errors=True)
