"""What the `jaxseg` command sets up before JAX starts: XLA:CPU flags (jaxseg.xla_flags)
and glibc's huge pages (jaxseg.hugepages), seen from a real process."""

import json
import os
import subprocess
import sys

import pytest

from jaxseg import hugepages, xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_flags_are_appended_unless_the_user_set_the_same_flag():
  assert xla_flags.with_flags("") == FLAG
  assert xla_flags.with_flags("--xla_force_host_platform_device_count=4") == (
      "--xla_force_host_platform_device_count=4 " + FLAG)
  mine = "--xla_cpu_experimental_ynn_fusion_type="          # the user's choice wins
  assert xla_flags.with_flags(mine) == mine
  assert xla_flags.with_flags(FLAG) == FLAG                 # never twice


def test_apply_edits_the_given_environment_and_honours_the_opt_out():
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  xla_flags.apply(env)
  assert env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false " + FLAG
  env = {"JAXSEG_XLA_FLAGS": "0"}
  xla_flags.apply(env)
  assert "XLA_FLAGS" not in env


def _bench_env(env):
  out = subprocess.run(
      [sys.executable, "-m", "jaxseg", "bench", "--what", "train", "--model", "cnn3",
       "--batch-size", "1", "--image-size", "16", "--steps", "1", "--json"],
      capture_output=True, text=True, env=env, timeout=300, check=True)
  d = json.loads(out.stdout.strip().splitlines()[-1])
  return d["glibc_tunables"], d["xla_flags"]


def test_a_real_process_runs_with_the_flags_and_tunable_unless_opted_out():
  env = {k: v for k, v in os.environ.items() if k not in (
      "GLIBC_TUNABLES", "JAXSEG_HUGEPAGES", "JAXSEG_HUGEPAGES_REEXEC", "JAXSEG_XLA_FLAGS")}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  tunables, flags = _bench_env(env)
  assert flags == "--xla_force_host_platform_device_count=2 " + FLAG
  assert tunables == ("glibc.malloc.hugetlb=1" if hugepages.wanted({}) else "")
  tunables, flags = _bench_env({**env, "JAXSEG_HUGEPAGES": "0", "JAXSEG_XLA_FLAGS": "0"})
  assert (tunables, flags) == ("", "--xla_force_host_platform_device_count=2")
