import subprocess
import sys

from jaxseg import cli


def test_every_subcommand_has_help(capsys):
  for name in cli.COMMANDS:
    try:
      cli.main([name, "--help"])
    except SystemExit as e:
      assert e.code == 0
    out = capsys.readouterr().out
    assert "usage: jaxseg " + name in out


def test_unknown_subcommand_is_one_line_exit_2():
  r = subprocess.run([sys.executable, "-m", "jaxseg", "nope"], capture_output=True, text=True)
  assert r.returncode == 2
  assert len(r.stderr.strip().splitlines()) == 1
  assert "Traceback" not in r.stderr
