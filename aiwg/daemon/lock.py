# tests: tests/e2e/test_lifecycle.py
"""InstanceLock service: holds the project's flock and owns the pid file."""

from __future__ import annotations

import os

from twisted.application.service import Service
from twisted.logger import Logger

from aiwg import instance
from aiwg.daemon.statefile import write_atomic
from aiwg.paths import ProjectPaths


class InstanceLock(Service):
    """First to start, last to stop: nothing else may touch the project's
    daemon files unless this process holds the lock."""

    name = "lock"
    log = Logger()

    def __init__(self, paths: ProjectPaths) -> None:
        self._paths = paths
        self._fd: int | None = None

    def privilegedStartService(self) -> None:
        instance.ensure_dirs(self._paths)
        self._fd = instance.acquire(self._paths)
        write_atomic(self._paths.pid_file, f"{os.getpid()}\n".encode(), mode=0o644)
        super().privilegedStartService()

    def stopService(self) -> None:
        super().stopService()
        self.release()

    def abort_start(self) -> None:
        self.release()

    def release(self) -> None:
        """Remove our pid file and drop the lock (idempotent; used on failed starts too)."""
        if self._fd is None:
            return
        if instance.read_pid_file(self._paths) == os.getpid():
            try:
                self._paths.pid_file.unlink()
            except FileNotFoundError:
                pass
        instance.release(self._fd)
        self._fd = None
