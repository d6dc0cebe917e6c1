"""One tiny trained workdir for all reliability tests, trained once per session.

Under pytest-xdist the workers share it: the first one to take the lock
trains it (in-process, through the real `jaxseg train`), the others wait.
Tests must not change it; they compare hashes of all its files.
"""

import contextlib
import fcntl
import os
import shutil

import pytest

from jaxseg import cli
from reliability_helpers import RUN_ARGV, tree_hash


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  # xdist: each worker has base/../popen-gwN; the parent is this session's.
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  path = root / "reliability-shared"
  path.mkdir(exist_ok=True)
  return path


@pytest.fixture(scope="session")
def trained_run(shared_dir):
  """Path of a finished 1-epoch cnn3 run (`jaxseg train ... --workdir W`)."""
  workdir = shared_dir / "run"
  with open(shared_dir / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      done = shared_dir / "run.done"
      if not done.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.redirect_stdout(open(os.devnull, "w")):
          status = cli.main(["train", *RUN_ARGV, "--workdir", str(workdir)])
        assert status == 0
        done.touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return workdir


@pytest.fixture
def unchanged(trained_run):
  """The trained workdir; asserts after the test that no file in it changed."""
  before = tree_hash(trained_run)
  assert before
  yield trained_run
  assert tree_hash(trained_run) == before
