# tests: tests/daemon/test_selfrepair.py, tests/e2e/test_lifecycle.py
"""The daemon's own files put back when someone deletes them — the lock, the pid
file, the socket and its pointer — and a deleted project directory noticed.

Driven by inotify on the files themselves and on the directories that hold them
(for their own deletion only), so a deletion is repaired at once, and an idle
daemon wakes neither to look nor for the heartbeat's own writes beside them; the
heartbeat runs the same checks as a backstop. inotify is trusted only once a probe file's removal has been seen
through it; where it is missing (not Linux) or fails, the heartbeat alone does
the checks and `daemon status` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

#: Removed at start: its deletion, seen through inotify, shows that inotify works.
PROBE_NAME = ".self-repair-probe"
#: Several events of one deletion (rm -r) lead to one round of checks.
COALESCE_SECONDS = 0.05


class SelfRepair(Service):
    name = "self_repair"
    log = Logger()

    def __init__(self, *, reactor: Any, directories: list[Path], files: list[Path],
                 checks: list[Callable[[], None]], gone: Callable[[], bool] = lambda: False) -> None:
        self._reactor = reactor
        self._directories = directories  # the first holds the probe
        self._files = files
        self._checks = checks
        self._gone = gone  # the project directory was deleted: nothing may be put back into its place
        self._notifier: Any = None
        self._lost = False  # a watched directory went: its watch (and Twisted's INotify) with it
        self._pending: Any = None
        self.mode = "heartbeat"
        self.note: str | None = None
        self.repairs = 0

    def startService(self) -> None:
        super().startService()
        try:
            from twisted.internet import inotify
        except ImportError:
            self.note = "inotify is not available here: deleted files are put back at the next heartbeat"
            return
        self._inotify = inotify
        try:
            self._open()
            probe = self._directories[0] / PROBE_NAME
            probe.write_bytes(b"")
            self._watch(probe)
            probe.unlink()
        except Exception as exc:  # out of watches or instances, a file system without it
            self.note = (f"inotify cannot watch the daemon's files ({exc}): deleted files are put back at "
                         "the next heartbeat")
            self._close()

    def stopService(self) -> None:
        super().stopService()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._close()

    def _close(self) -> None:
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None

    def _open(self) -> None:
        """A new inotify instance watching each directory that exists. (Twisted's
        INotify closes itself when a watched directory is deleted: a repair that
        made one anew opens a new instance.)"""
        self._close()
        self._notifier = self._inotify.INotify(self._reactor)
        self._notifier.startReading()
        self._lost = False
        self._arm()

    def _arm(self) -> None:
        """Each file that exists, for its removal, replacement or rewrite; each
        directory that exists, for its own removal."""
        for path in [*self._files, *self._directories]:
            if os.path.lexists(path):
                self._watch(path)

    def _watch(self, path: Path) -> None:
        from twisted.python.filepath import FilePath

        inotify = self._inotify
        mask = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
        if path not in self._directories:
            mask |= inotify.IN_CLOSE_WRITE | inotify.IN_ATTRIB  # rewritten, or its last link removed
        self._notifier.watch(FilePath(os.fsencode(path)), mask=mask, callbacks=[self._event])

    def _event(self, _: Any, path: Any, mask: int) -> None:
        inotify = self._inotify
        if mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_IGNORED):
            self._lost = True
        if path.basename() == os.fsencode(PROBE_NAME):
            if self.mode != "inotify":
                self.mode = "inotify"
                self.log.debug("self-repair: inotify works")
            self._lost = True  # its removal closed the notifier (Twisted's INotify does so): open anew
        if self._pending is None or not self._pending.active():
            self._pending = self._reactor.callLater(COALESCE_SECONDS, self.repair)

    def repair(self) -> None:
        """Run every check (each one's trouble is its own), then watch again what was made anew."""
        self._pending = None
        for check in self._checks:
            if self._gone():
                self._close()
                return
            try:
                check()
            except Exception:
                self.log.failure("self-repair: a check failed")
        self.repairs += 1
        if self._notifier is not None and self.running:
            try:
                self._open() if self._lost else self._arm()
            except Exception as exc:
                self.note = f"inotify cannot watch the daemon's files again ({exc}); checking at each heartbeat"
                self.mode = "heartbeat"
                self._close()

    def beat(self) -> None:
        """The heartbeat's backstop: the same checks, whatever inotify said."""
        self.repair()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "checks": self.repairs}
        if self.note:
            out["note"] = self.note
        return out
