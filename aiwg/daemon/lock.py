# tests: tests/e2e/test_lifecycle.py, tests/daemon/test_lock.py
"""InstanceLock service: holds the project's flock and owns the pid file."""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

from aiwg import instance
from aiwg.errors import AlreadyRunning
from aiwg.daemon.statefile import write_atomic
from aiwg.paths import ProjectPaths

class InstanceLock(Service):
    """First to start, last to stop: nothing else may touch the project's
    daemon files unless this process holds the lock.

    An flock guards only the file it is on, and `.lock` can be deleted while
    the daemon runs: so the daemon also locks the project directory itself,
    which is what keeps a second daemon out, and puts back its lock and pid
    files when they are removed (`check`, run by SelfRepair), for the readers
    of `.lock` and `daemon.pid`."""

    name = "lock"
    log = Logger()

    def __init__(self, paths: ProjectPaths, reactor: Any = None,
                 on_project_gone: Callable[[], Any] | None = None) -> None:
        self._paths = paths
        self._reactor = reactor
        self._on_project_gone = on_project_gone
        self._fd: int | None = None
        self._project_fd: int | None = None
        self.gone = False  # the project directory was deleted: nothing more to put back
        self.problem: str | None = None

    def privilegedStartService(self) -> None:
        instance.ensure_dirs(self._paths)
        self._project_fd = instance.acquire_project(self._paths)
        if self._project_fd is None:
            self.log.warn("cannot lock the project directory {root} on this file system (NFS?); "
                          "deleting {lock} while the daemon runs would let a second daemon start",
                          root=str(self._paths.root), lock=str(self._paths.lock_file))
        try:
            self._fd = instance.acquire(self._paths)
        except BaseException:
            self.release()
            raise
        self._write_pid_file()
        super().privilegedStartService()

    def stopService(self) -> None:
        super().stopService()
        self.release()

    def abort_start(self) -> None:
        self.release()

    def _write_pid_file(self) -> None:
        write_atomic(self._paths.pid_file, f"{os.getpid()}\n".encode(), mode=0o644)

    def check(self) -> None:
        """Put back a deleted lock file (locked again) or pid file."""
        if self._fd is None or self.gone:
            return
        if self._project_fd is not None and not instance.same_directory(self._project_fd, self._paths):
            # Deleted (and maybe made again): putting files back would plant them
            # in a new project, beside a daemon of its own. This one is done.
            self._report(f"project directory {self._paths.root} was deleted while the daemon ran; stopping")
            self.gone = True
            if self._on_project_gone is not None:
                self._on_project_gone()
            return
        try:
            if not instance.holds(self._fd, self._paths) and not self._relock():
                return
            if instance.read_pid_file(self._paths) != os.getpid():
                self._write_pid_file()
                self.log.warn("pid file {path} was removed or changed; wrote it again",
                              path=str(self._paths.pid_file))
        except OSError as exc:
            self._report(f"cannot restore the daemon's lock file {self._paths.lock_file} "
                         f"or pid file {self._paths.pid_file}: {exc}")
            return
        self.problem = None

    def _relock(self) -> bool:
        instance.ensure_dirs(self._paths)
        try:
            fd = instance.acquire(self._paths, patience=0)
        except AlreadyRunning as exc:
            self._report(
                f"lock file {self._paths.lock_file} was replaced, and another process "
                f"(pid {exc.pid or 'unknown'}) holds the new one"
            )
            return False
        old, self._fd = self._fd, fd
        if old is not None:
            instance.release(old)
        self.log.warn("lock file {path} was removed while the daemon ran; created and locked it again",
                      path=str(self._paths.lock_file))
        return True

    def _report(self, problem: str) -> None:
        if problem != self.problem:
            self.log.error("{problem}", problem=problem)
        self.problem = problem

    def health_issues(self) -> list[str]:
        return [self.problem] if self.problem else []

    def release(self) -> None:
        """Remove our pid file and drop the lock (idempotent; used on failed starts too)."""
        if self._fd is not None:
            if instance.read_pid_file(self._paths) == os.getpid():
                try:
                    self._paths.pid_file.unlink()
                except FileNotFoundError:
                    pass
            instance.release(self._fd)
            self._fd = None
        if self._project_fd is not None:
            instance.release(self._project_fd)
            self._project_fd = None
