"""`jaxseg --help` and `jaxseg <cmd> --help` import no JAX and only the chosen
command's module (so they answer in a fraction of a second, not ~6 s).

Each check runs in a fresh interpreter (this one has JAX loaded already).
"""

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import jaxseg.commands
from jaxseg import cli

_PROBE = """
import contextlib, io, json, sys
from jaxseg import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
  try:
    cli.main(sys.argv[1:])
  except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "jax": "jax" in sys.modules, "help": out.getvalue(),
                  "commands": sorted(m for m in sys.modules if m.startswith("jaxseg.commands."))}))
"""


def _probe(*argv):
  r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_command_module_is_listed():
  # A module of jaxseg.commands is a command (HELP, add_arguments, run) and listed, or a
  # helper of one (e.g. explain_output) that is none of these.
  modules = {m.name for m in pkgutil.iter_modules(jaxseg.commands.__path__)}
  assert set(cli.COMMANDS) <= modules
  for name in modules - set(cli.COMMANDS):
    module = importlib.import_module(f"jaxseg.commands.{name}")
    entry_points = [a for a in ("HELP", "add_arguments", "run") if hasattr(module, a)]
    assert not entry_points, f"jaxseg.commands.{name} has {entry_points} but is not in cli.COMMANDS"


def test_top_level_help_imports_no_command():
  p = _probe("--help")
  assert p["code"] == 0 and p["commands"] == [] and not p["jax"]
  for name in cli.COMMANDS:
    assert name in p["help"]


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_command_help_imports_only_that_command_and_no_jax(name):
  p = _probe(name, "--help")
  assert p["code"] == 0 and f"usage: jaxseg {name}" in p["help"]
  assert p["commands"] == [f"jaxseg.commands.{name}"]
  assert not p["jax"]
