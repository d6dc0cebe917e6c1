"""One tiny trained workdir for all reliability tests, trained once per session.

Under pytest-xdist the workers share it: the first one to take the lock
trains it (in-process, through the real `jaxseg train`), the others wait.
Tests must not change it; they compare hashes of all its files.
"""

import contextlib
import fcntl
import io
import json
import os
import shutil

import pytest

from jaxseg import cli
from reliability_helpers import RESUME_PROBE, RUN_ARGV, WORKDIR_PROBE, tree_hash


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
  """Path of a finished 1-epoch run of RUN_MODEL (`jaxseg train ... --workdir W`)."""
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
        _resume_with_another_models_checkpoint(workdir, shared_dir)
        _workdir_that_cannot_be_created(shared_dir)
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


def _main(argv):
  """cli.main with stdout dropped -> (status, stderr)."""
  err = io.StringIO()
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    try:
      status = cli.main([str(a) for a in argv])
    except SystemExit as e:
      status = e.code
  return status, err.getvalue()


def _workdir_that_cannot_be_created(shared_dir):
  """`jaxseg train --workdir` under /dev/null (a file) and under /proc: the run
  gets as far as creating the workdir (after building the model), so it runs
  here in the warm process too. test_workdir_that_cannot_be_created checks."""
  records = {}
  for where in ("/dev/null/w", "/proc/jaxseg-nope/w"):
    status, err = _main(["train", *RUN_ARGV, "--workdir", where])
    records[where] = {"status": status, "stderr": err}
  (shared_dir / WORKDIR_PROBE).write_text(json.dumps(records))


def _resume_with_another_models_checkpoint(workdir, shared_dir):
  """`jaxseg train --resume` on a copy of the run whose checkpoints say they
  were written by an fcn run (config.json still says RUN_MODEL).

  Run here, right after training, because this process has the model's init
  compiled already: `--resume` builds the model before it reads the
  checkpoint's config, which costs ~40 s of compiling in a cold process on a
  loaded machine. test_resume_checkpoint_of_another_model checks the record.
  """
  copy = shared_dir / "run-other-model"
  shutil.copytree(workdir, copy)
  metas = sorted(copy.glob("*/*/meta/metadata"))
  models = []
  for meta in metas:
    m = json.loads(meta.read_text())
    models.append(m["config"]["model"])
    m["config"]["model"] = "fcn"
    meta.write_text(json.dumps(m))
  before = tree_hash(copy)
  status, err = _main(["train", "--workdir", copy, "--resume", "--epochs", "2", "--quiet"])
  record = {"metas": [str(m.relative_to(copy)) for m in metas], "models_before": models,
            "status": status, "stderr": err, "unchanged": tree_hash(copy) == before}
  (shared_dir / RESUME_PROBE).write_text(json.dumps(record))
