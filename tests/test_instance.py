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
        paths.pid_file.write_text(f"{os.getpid()}\n")
        # Held, by someone: anything may flock a directory, so no pid file is trusted.
        assert instance.holder(paths) == 0
        with pytest.raises(AlreadyRunning) as raised:
            instance.acquire_project(paths, patience=0)
        assert raised.value.pid is None
        assert instance.same_directory(project, paths)
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


def test_same_directory_sees_a_project_deleted_and_made_again(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    paths = ProjectPaths(root)
    fd = instance.acquire_project(paths)
    assert fd is not None
    try:
        assert instance.same_directory(fd, paths)
        root.rmdir()
        assert not instance.same_directory(fd, paths)
        root.mkdir()
        assert not instance.same_directory(fd, paths)
        assert instance.holder(paths) is None  # the new directory is nobody's
    finally:
        instance.release(fd)
