"""Where things live, and the 108-byte socket path fallback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiwg.paths import SOCKET_PATH_MAX, ProjectPaths


def test_layout(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    assert paths.pid_file == tmp_path / ".aiwg" / "daemon.pid"
    assert paths.lock_file == tmp_path / ".aiwg" / "daemon" / ".lock"
    assert paths.default_socket == tmp_path / ".aiwg" / "daemon" / "daemon.sock"
    assert paths.bind_socket() == paths.default_socket


def test_long_paths_fall_back_deterministically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("AIWG_DAEMON_SOCKET", raising=False)
    deep = tmp_path / ("x" * 120)
    paths = ProjectPaths(deep)
    chosen = paths.bind_socket()
    assert chosen.parent == Path(f"/tmp/aiwg-{os.getuid()}")
    assert len(os.fsencode(chosen)) <= SOCKET_PATH_MAX
    assert chosen == ProjectPaths(deep).bind_socket()
    assert chosen != ProjectPaths(tmp_path / ("y" * 120)).bind_socket()
    assert paths.client_socket() == chosen


def test_runtime_dir_is_preferred_when_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/tmp")
    chosen = ProjectPaths(tmp_path / ("x" * 120)).bind_socket()
    assert chosen.parent == Path("/tmp/aiwg")


def test_env_override_for_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWG_DAEMON_SOCKET", "/somewhere/else.sock")
    paths = ProjectPaths(tmp_path)
    assert paths.client_socket() == Path("/somewhere/else.sock")
    assert paths.bind_socket() == paths.default_socket  # the daemon ignores it
