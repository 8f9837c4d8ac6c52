"""The single-instance lock: the project directory's flock keeps a second daemon
out even when the files under .aiwg/ are deleted; `.lock` names the holder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiwg import instance
from aiwg.errors import AlreadyRunning
from aiwg.paths import ProjectPaths


@pytest.fixture
def paths(tmp_path: Path) -> ProjectPaths:
    paths = ProjectPaths(tmp_path)
    instance.ensure_dirs(paths)
    return paths


def test_holds_follows_the_file_on_disk(paths: ProjectPaths) -> None:
    fd = instance.acquire(paths)
    try:
        assert instance.holds(fd, paths)
        paths.lock_file.unlink()
        assert not instance.holds(fd, paths)
        paths.lock_file.write_text("someone else's\n")  # a new file: another inode
        assert not instance.holds(fd, paths)
    finally:
        instance.release(fd)


def test_the_project_lock_outlives_its_files(paths: ProjectPaths) -> None:
    project = instance.acquire_project(paths)
    lock = instance.acquire(paths)
    try:
        assert instance.holder(paths) == os.getpid()
        paths.lock_file.unlink()
        assert instance.holder(paths) == 0  # held; no pid file to name it
        paths.pid_file.write_text(f"{os.getpid()}\n")
        assert instance.holder(paths) == os.getpid()
        paths.pid_file.write_text("999999999\n")  # names nobody alive
        assert instance.holder(paths) == 0
        with pytest.raises(AlreadyRunning):
            instance.acquire_project(paths, patience=0)
    finally:
        instance.release(lock)
        instance.release(project)
    assert instance.holder(paths) is None
    instance.release(instance.acquire_project(paths, patience=0))


def test_acquire_without_patience_fails_at_once(paths: ProjectPaths) -> None:
    fd = instance.acquire(paths)
    try:
        with pytest.raises(AlreadyRunning) as raised:
            instance.acquire(paths, patience=0)
        assert raised.value.pid == os.getpid()
    finally:
        instance.release(fd)
