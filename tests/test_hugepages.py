"""The `jaxseg` command's re-execution with glibc's huge-page tunable (jaxseg.hugepages)."""

import sys

from jaxseg import hugepages

LINUX = dict(platform="linux", libc=(2, 36), thp=True)


def test_wanted_only_on_linux_glibc_2_35_with_thp_and_not_chosen_already():
  assert hugepages.wanted({}, **LINUX)
  assert not hugepages.wanted({}, platform="darwin", libc=(2, 36), thp=True)
  assert not hugepages.wanted({}, platform="linux", libc=(2, 34), thp=True)   # no such tunable
  assert not hugepages.wanted({}, platform="linux", libc=None, thp=True)      # musl etc.
  assert not hugepages.wanted({}, platform="linux", libc=(2, 36), thp=False)  # THP "never"
  assert not hugepages.wanted({"JAXSEG_HUGEPAGES": "0"}, **LINUX)             # opted out
  assert hugepages.wanted({"JAXSEG_HUGEPAGES": "1"}, **LINUX)
  assert not hugepages.wanted({"JAXSEG_HUGEPAGES_REEXEC": "1"}, **LINUX)      # no second exec
  assert not hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, **LINUX)
  assert hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **LINUX)


def test_the_tunable_is_appended_to_what_the_user_set():
  env = hugepages.environ_with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert env["A"] == "b" and env["JAXSEG_HUGEPAGES_REEXEC"] == "1"
  assert hugepages.environ_with_tunable({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_thp_setting_is_read_from_the_kernel_file(tmp_path):
  f = tmp_path / "enabled"
  f.write_text("always [madvise] never\n")
  assert hugepages.thp_available(str(f))
  f.write_text("always madvise [never]\n")
  assert not hugepages.thp_available(str(f))
  assert not hugepages.thp_available(str(tmp_path / "missing"))


def test_command_line_restarts_the_console_script_or_the_module(tmp_path):
  script = tmp_path / "jaxseg"
  script.write_text("#!/bin/sh\n")
  script.chmod(0o755)
  assert hugepages.command_line([str(script), "train", "--epochs", "1"]) == [
      str(script), "train", "--epochs", "1"]
  main_py = str(tmp_path / "__main__.py")
  assert hugepages.command_line([main_py, "bench"]) == [sys.executable, "-m", "jaxseg", "bench"]
