"""The single-instance lock's helpers: who holds it, and whether a daemon whose
lock file was deleted still answers on the socket."""

from __future__ import annotations

import os
import socket
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


def listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.fspath(path))
    sock.listen(1)
    return sock


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


def test_socket_answers_only_when_something_listens(paths: ProjectPaths) -> None:
    path = paths.bind_socket()
    assert not instance.socket_answers(path)  # no file
    sock = listen(path)
    assert instance.socket_answers(path)
    sock.close()  # the file stays: a dead daemon's socket
    assert path.exists()
    assert not instance.socket_answers(path)
    path.unlink()
    path.write_text("not a socket")
    assert not instance.socket_answers(path)


def test_a_start_is_refused_while_a_daemon_answers_without_its_lock_file(paths: ProjectPaths) -> None:
    sock = listen(paths.bind_socket())
    try:
        paths.pid_file.write_text(f"{os.getpid()}\n")
        with pytest.raises(AlreadyRunning) as raised:
            instance.refuse_if_answering(paths)
        assert raised.value.pid == os.getpid()
        paths.pid_file.write_text("999999999\n")  # names nobody alive
        with pytest.raises(AlreadyRunning) as raised:
            instance.refuse_if_answering(paths)
        assert raised.value.pid is None
    finally:
        sock.close()
    instance.refuse_if_answering(paths)  # the socket is dead now: no refusal


def test_running_pid_falls_back_to_the_pid_file_while_the_socket_answers(paths: ProjectPaths) -> None:
    assert instance.running_pid(paths) is None
    paths.pid_file.write_text(f"{os.getpid()}\n")
    assert instance.running_pid(paths) is None  # a pid file alone proves nothing
    sock = listen(paths.bind_socket())
    try:
        assert instance.running_pid(paths) == os.getpid()
    finally:
        sock.close()
    assert instance.running_pid(paths) is None


def test_acquire_without_patience_fails_at_once(paths: ProjectPaths) -> None:
    fd = instance.acquire(paths)
    try:
        with pytest.raises(AlreadyRunning) as raised:
            instance.acquire(paths, patience=0)
        assert raised.value.pid == os.getpid()
    finally:
        instance.release(fd)
