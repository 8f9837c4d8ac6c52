# tests: tests/daemon/test_heartbeat.py
"""Atomic file replacement for heartbeat, state.json and the pid file.

Readers (monitoring scripts, the CLI) must never see a half-written file, and
a crash must leave either the old or the new content: write a temp file in the
same directory, fsync it, rename it over the target.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: Path, value: Any, sync: bool = True) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode(), sync=sync)


def read_json(path: Path, owner: str, log: Any) -> Any:
    """A state file written by `write_json_atomic`, or None when there is none; an
    unreadable one is logged (as `owner`'s) and treated as absent, never fatal."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warn("{owner}: ignoring unreadable {path}: {error}", owner=owner, path=str(path), error=str(exc))
        return None


class BackgroundWriter:
    """Writes JSON files (atomically, not synced) on a thread of its own, so that
    the file system's waits (a rename may wait for the journal) are not the
    reactor's: the heartbeat of an idle daemon then wakes its reactor once a
    beat. Fire and forget: nothing calls back into the reactor; `error` says
    what the last batch could not write, until one succeeds."""

    def __init__(self) -> None:
        import queue

        self._jobs: Any = queue.SimpleQueue()
        self._thread: Any = None  # started by start() or the first write: in the daemon's process, after any fork
        self.error: str | None = None

    def start(self) -> None:
        """Start the thread now: a thread's start makes its starter wait for it,
        which is better done at the daemon's start than at its first beat."""
        if self._thread is None:
            import threading

            self._thread = threading.Thread(target=self._run, name="aiwg-state-writer", daemon=True)
            self._thread.start()

    def write(self, files: list[tuple[Path, Any]]) -> None:
        self.start()
        self._jobs.put(files)

    def _run(self) -> None:
        while True:
            files = self._jobs.get()
            if files is None:
                return
            try:
                for path, value in files:
                    write_json_atomic(path, value, sync=False)
                self.error = None
            except Exception as exc:
                self.error = f"cannot write {files[0][0].parent}: {exc}"

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None
