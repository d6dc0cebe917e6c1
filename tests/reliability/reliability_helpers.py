"""Shared bits of the reliability tests: run the CLI, hash a workdir, write real files."""

import hashlib
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from jaxseg import cli

# The tiny run every test reuses (trained once per session, see conftest.py).
# The lab's dense model: the cheapest to initialise and compile (fewest layers).
RUN_MODEL = "dense"
RUN_ARGV = ["--model", RUN_MODEL, "--data", "synthetic:8,4,32", "--epochs", "1",
            "--batch-size", "4", "--quiet"]
# Record of the --resume probe the session fixture runs (see conftest.py).
RESUME_PROBE = "resume-other-model.json"
WORKDIR_PROBE = "workdir-cannot-be-created.json"


def run_cli(capsys, *argv):
  """jaxseg.cli.main in-process -> (status, stdout, stderr); argparse exits count too."""
  capsys.readouterr()
  try:
    status = cli.main([str(a) for a in argv])
  except SystemExit as e:
    status = e.code
  out = capsys.readouterr()
  return status, out.out, out.err


def tree_hash(root) -> dict:
  """{relative path: sha256 of the bytes (or 'dir')} of everything under root."""
  root = Path(root)
  if not root.exists():
    return {}
  result = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      result[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
    for f in filenames:
      p = os.path.join(dirpath, f)
      result[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
  return result


def assert_one_line_error(status, err, *needles):
  """Exit status 2, one line on stderr, no traceback, each needle in the line."""
  assert "Traceback" not in err, err
  assert status == 2, (status, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  for needle in needles:
    assert str(needle) in lines[0], (needle, lines[0])
  return lines[0]


def write(path, array, *, vector=False):
  """Writes a NumPy array as a real image file with SimpleITK (any format)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  img = sitk.GetImageFromArray(np.asarray(array), isVector=vector)
  sitk.WriteImage(img, str(path), useCompression=path.name.endswith(".gz"))
  return path


def phantom(n_cases=2, size=16, seed=0):
  """n_cases (image, label) pairs: a bright disc (label 1) on noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  pairs = []
  for i in range(n_cases):
    cy, cx, r = size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2), size / 4
    label = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
    image = (rng.normal(100, 10, (size, size)) + 300.0 * label).astype(np.int16)
    pairs.append((image, label))
  return pairs


def folder(root, pairs=None, *, ext=".nrrd", label_ext=None):
  """Writes PATH/images/case<i><ext> and PATH/labels/case<i><ext>; returns the paths."""
  root = Path(root)
  pairs = phantom() if pairs is None else pairs
  images, labels = [], []
  for i, (image, label) in enumerate(pairs):
    if image is not None:
      images.append(write(root / "images" / f"case{i}{ext}", image))
    if label is not None:
      labels.append(write(root / "labels" / f"case{i}{label_ext or ext}", label))
  (root / "images").mkdir(parents=True, exist_ok=True)
  (root / "labels").mkdir(parents=True, exist_ok=True)
  return images, labels
