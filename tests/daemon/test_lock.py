"""InstanceLock: a deleted lock file or pid file is put back while the daemon
runs (by its check, which SelfRepair runs when they are deleted), so that the
next start still sees the project taken."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from aiwg import instance
from aiwg.daemon.lock import InstanceLock
from aiwg.errors import AlreadyRunning
from aiwg.paths import ProjectPaths


@pytest.fixture
def started(tmp_path: Path):
    paths = ProjectPaths(tmp_path)
    clock = Clock()
    lock = InstanceLock(paths, clock)
    lock.privilegedStartService()
    lock.startService()
    yield paths, clock, lock
    lock.stopService()


def test_a_second_lock_is_refused_even_without_the_lock_file(started) -> None:
    paths, clock, lock = started
    for name in (paths.lock_file, paths.pid_file):
        name.unlink()
    second = InstanceLock(paths, Clock())
    with pytest.raises(AlreadyRunning):
        second.privilegedStartService()
    assert not paths.lock_file.exists() and not paths.pid_file.exists()  # it touched nothing


def test_a_deleted_lock_file_is_created_and_locked_again(started) -> None:
    paths, clock, lock = started
    paths.lock_file.unlink()
    assert instance.holder(paths) == 0  # still held (the project directory), pid not known
    lock.check()
    assert instance.holder(paths) == os.getpid()
    with pytest.raises(AlreadyRunning):
        instance.acquire(paths, patience=0)
    assert lock.health_issues() == []


def test_a_deleted_pid_file_is_written_again(started) -> None:
    paths, clock, lock = started
    paths.pid_file.unlink()
    lock.check()
    assert instance.read_pid_file(paths) == os.getpid()


def test_a_whole_deleted_daemon_dir_comes_back(started) -> None:
    paths, clock, lock = started
    for name in (paths.lock_file, paths.pid_file):
        name.unlink()
    for directory in (paths.actions_dir, paths.events_dir):
        directory.rmdir()
    paths.daemon_dir.rmdir()
    lock.check()
    assert instance.holder(paths) == os.getpid()
    assert instance.read_pid_file(paths) == os.getpid()


def test_a_lock_file_taken_by_someone_else_is_a_health_issue(started) -> None:
    paths, clock, lock = started
    paths.lock_file.unlink()
    other = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(other, b"4242\n")
        lock.check()
        [issue] = lock.health_issues()
        assert str(paths.lock_file) in issue and "pid 4242" in issue
        lock.check()  # said once, not every check
        assert lock.health_issues() == [issue]
        fcntl.flock(other, fcntl.LOCK_UN)
        lock.check()  # freed: ours again
        assert lock.health_issues() == []
        assert instance.holder(paths) == os.getpid()
    finally:
        os.close(other)


def test_a_problem_clears_once_the_files_are_back(started) -> None:
    paths, clock, lock = started
    paths.pid_file.unlink()
    paths.pid_file.mkdir()  # in the way of the pid file
    lock.check()
    [issue] = lock.health_issues()
    assert str(paths.pid_file) in issue
    paths.pid_file.rmdir()
    lock.check()
    assert lock.health_issues() == []
    assert instance.read_pid_file(paths) == os.getpid()


def test_stop_stops_checking_and_releases(started) -> None:
    paths, clock, lock = started
    lock.stopService()
    assert clock.getDelayedCalls() == []
    assert instance.holder(paths) is None
    assert not paths.pid_file.exists()
    again = InstanceLock(paths, Clock())  # both locks free: a new start takes them
    again.privilegedStartService()
    again.stopService()


def test_a_deleted_project_directory_stops_the_daemon_and_plants_nothing(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    paths = ProjectPaths(root)
    clock, gone = Clock(), []
    lock = InstanceLock(paths, clock, on_project_gone=lambda: gone.append(True))
    lock.privilegedStartService()
    lock.startService()
    try:
        import shutil

        shutil.rmtree(root)
        root.mkdir()  # a new project of the same name
        lock.check()
        assert gone == [True]
        assert list(root.iterdir()) == []  # no .aiwg put back into someone else's directory
        assert "deleted" in lock.health_issues()[0]
        for _ in range(10):
            lock.check()
        assert gone == [True]  # said once
    finally:
        lock.stopService()
