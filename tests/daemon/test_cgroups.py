"""Task cgroups: finding this process's cgroup v2, and the start-up probe that
proves a task's processes can be placed and killed through one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aiwg.daemon.tasks.cgroups import _cgroup2_mount, _own_cgroup, open_task_cgroups, own_cgroup_dir, tasks_dir_name

MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_the_cgroup2_mount_and_this_process_group_are_read_from_proc() -> None:
    assert _cgroup2_mount(MOUNTINFO) == "/sys/fs/cgroup/unified"
    assert _cgroup2_mount("25 30 0:22 / /sys rw - sysfs sysfs rw\n") is None
    assert _own_cgroup("12:pids:/\n1:name=systemd:/x\n0::/system.slice/aiwg-daemon@x.service\n") == \
        "/system.slice/aiwg-daemon@x.service"
    assert _own_cgroup("0::/\n") == "/"
    assert _own_cgroup("1:cpu:/\n") is None


def test_each_project_has_its_own_directory() -> None:
    assert tasks_dir_name(Path("/a")) != tasks_dir_name(Path("/b"))
    assert tasks_dir_name(Path("/a")).startswith("aiwg-")


def test_a_directory_that_cannot_be_a_cgroup_is_refused_with_why(tmp_path: Path) -> None:
    cgroups, why = open_task_cgroups(tmp_path, base_dir=tmp_path / "not-a-cgroup")
    assert cgroups is None and "not-a-cgroup" in why


def test_the_probe_places_kills_and_removes_where_cgroups_work(tmp_path: Path) -> None:
    own, why = own_cgroup_dir()
    if own is None:
        pytest.skip(why)
    cgroups, why = open_task_cgroups(tmp_path)
    if cgroups is None:
        pytest.skip(f"task cgroups do not work here: {why}")
    try:
        sleeper = subprocess.Popen(["sleep", "30"])
        cgroups.place("t-test", sleeper.pid)
        assert cgroups.members("t-test") == [sleeper.pid]
        assert cgroups.leftovers() == ["t-test"]
        assert cgroups.kill("t-test") == 1
        assert sleeper.wait(timeout=5) == -9
        for _ in range(100):
            if cgroups.release("t-test"):
                break
        assert cgroups.leftovers() == []
    finally:
        cgroups.base.rmdir()


def test_holds_tells_a_task_process_from_others(tmp_path: Path) -> None:
    cgroups, why = open_task_cgroups(tmp_path)
    if cgroups is None:
        pytest.skip(f"task cgroups do not work here: {why}")
    try:
        inside = subprocess.Popen(["sleep", "30"])
        outside = subprocess.Popen(["sleep", "30"])
        cgroups.place("t-held", inside.pid)
        assert cgroups.holds(inside.pid) and not cgroups.holds(outside.pid)
        cgroups.kill("t-held")
        outside.kill()
        inside.wait(timeout=5)
        outside.wait(timeout=5)
        for _ in range(100):
            if cgroups.release("t-held"):
                break
    finally:
        cgroups.base.rmdir()


def test_a_process_is_moved_only_if_it_is_not_in_its_cgroup_and_an_empty_one_is_removed_at_once(
        tmp_path: Path) -> None:
    from aiwg.daemon.tasks.reaper import Reaper

    cgroups, why = open_task_cgroups(tmp_path)
    if cgroups is None:
        pytest.skip(f"task cgroups do not work here: {why}")
    reaper = Reaper(cgroups=cgroups)
    procs = reaper.prepare_cgroup("t-join")
    try:
        joined = subprocess.Popen(["sh", "-c", 'echo 0 > "$0"; exec sleep 30', procs])
        stray = subprocess.Popen(["sleep", "30"])  # did not join (its join failed, say)
        for _ in range(200):
            if cgroups.in_cgroup_of(joined.pid, "t-join"):
                break
            subprocess.run(["sleep", "0.01"])
        assert cgroups.in_cgroup_of(joined.pid, "t-join") is True
        assert cgroups.in_cgroup_of(stray.pid, "t-join") is False
        reaper.place_in_cgroup("t-join", stray.pid)
        assert sorted(cgroups.members("t-join")) == sorted([joined.pid, stray.pid])
        assert cgroups.remove("t-join") is None  # not empty: left alone
        cgroups.kill("t-join")
        joined.wait(timeout=5)
        stray.wait(timeout=5)
        assert cgroups.in_cgroup_of(stray.pid, "t-join") is None  # gone
        for _ in range(100):
            if reaper.release_cgroup("t-join"):
                break
        assert cgroups.leftovers() == []
    finally:
        cgroups.base.rmdir()
