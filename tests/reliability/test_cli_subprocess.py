"""A few bad inputs through a real `python -m jaxseg` process: what reaches the
terminal is one line on stderr (no traceback, no ITK/JAX noise), exit status 2,
nothing on stdout, and a directory the user already had is left as it was.

The processes run concurrently (each spends most of its time importing JAX),
and need no trained run, so under xdist this overlaps the other worker's training.
"""

import subprocess
import sys

import numpy as np

from reliability_helpers import folder, tree_hash, write


def test_bad_inputs_in_real_processes(tmp_path):
  _, labels = folder(tmp_path / "noise")
  labels[1].write_bytes(b"NRRD0004\n" + np.random.default_rng(5).bytes(300))
  mine = tmp_path / "mine"
  (mine / "sub").mkdir(parents=True)
  (mine / "sub" / "notes.txt").write_text("not a jaxseg run, but mine")
  before = tree_hash(mine)
  # (the same and many more cases run in-process in test_cli_bad_input.py;
  # only two processes here: each one pays for importing JAX)
  image = write(tmp_path / "in.nrrd", np.ones((8, 8), np.float32))
  train = ("train", "--model", "cnn3", "--batch-size", "2", "--epochs", "1")
  cases = {  # argv -> what the one line must contain
      train + ("--data", f"folder:{tmp_path / 'noise'}", "--workdir", str(mine / "w")):
          [str(labels[1]), "cannot read image"],
      ("predict", "--workdir", str(tmp_path / "none"), str(image), str(tmp_path / "o.nrrd")):
          ["--workdir", str(tmp_path / "none")],
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
  assert not (tmp_path / "o.nrrd").exists()
  assert tree_hash(mine) == before
