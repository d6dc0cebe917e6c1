"""A few bad inputs through a real `python -m jaxseg` process: what reaches the
terminal is one line on stderr (no traceback, no ITK/JAX noise), exit status 2.

The processes run concurrently: each one spends most of its time importing JAX.
"""

import subprocess
import sys

import numpy as np

from reliability_helpers import folder, tree_hash


def test_bad_inputs_in_real_processes(trained_run, tmp_path):
  before = tree_hash(trained_run)
  images, _ = folder(tmp_path / "gz", ext=".nii.gz")
  images[0].write_bytes(images[0].read_bytes()[:100])
  noise = tmp_path / "noise.nrrd"
  noise.write_bytes(b"NRRD0004\n" + np.random.default_rng(5).bytes(300))
  cases = {  # argv -> what the one line must contain
      ("train", "--model", "cnn3", "--batch-size", "2", "--data", f"folder:{tmp_path / 'gz'}",
       "--workdir", str(tmp_path / "w2")): [str(images[0]), "gzip"],
      ("train", "--model", "cnn3", "--data", "synthetic:8,4,32", "--batch-size", "4",
       "--workdir", str(trained_run)): ["--workdir", "not empty"],
      ("predict", "--workdir", str(trained_run), str(noise), str(tmp_path / "o1.nrrd")):
          [str(noise), "cannot read image"],
      ("evaluate", "--workdir", str(tmp_path / "none")): ["--workdir"],
  }
  procs = {argv: subprocess.Popen([sys.executable, "-m", "jaxseg", *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for argv in cases}
  for argv, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    assert "Traceback" not in err, (argv, err)
    assert proc.returncode == 2, (argv, proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith(f"jaxseg {argv[0]}: error: "), lines[0]
    for needle in cases[argv]:
      assert needle in lines[0], (needle, lines[0])
    assert out == "", (argv, out)
  assert not (tmp_path / "w2").exists() and not (tmp_path / "o1.nrrd").exists()
  assert tree_hash(trained_run) == before
