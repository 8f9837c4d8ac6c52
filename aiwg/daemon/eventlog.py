# tests: tests/daemon/test_eventlog.py
"""EventLog service: every bus event, one JSON line each, in .aiwg/daemon/events/YYYY-MM-DD.jsonl.

Days are UTC. Old days are deleted after `daemon.events.retention_days`; a
day's file stops at `daemon.events.max_file_mb` with a marker line, so a
storm of events cannot fill the disk. Task output chunks are not logged
here: they have their own files under actions/. The lines of one delivery
turn are written out together, at its end.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import time
from pathlib import Path
from typing import IO, Any

from twisted.application.service import Service
from twisted.logger import Logger

from aiwg.core.config import Config, EventLogSettings
from aiwg.core.events import Event
from aiwg.daemon.bus import EventBus, Subscription
from aiwg.core.timefmt import iso_utc

#: Topics too chatty for the day log.
SKIPPED_TOPICS = frozenset({"task:output"})

_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")

#: Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


class EventLog(Service):
    name = "eventlog"
    log = Logger()

    def __init__(self, *, bus: EventBus, directory: Path, settings: EventLogSettings) -> None:
        self._bus = bus
        self._directory = directory
        self._settings = settings
        self._subscription: Subscription | None = None
        self._day: str | None = None
        self._file: IO[bytes] | None = None
        self._size = 0
        self._full = False
        self.written = 0
        self.last_error: str | None = None

    def startService(self) -> None:
        super().startService()
        self._prune(time.gmtime(self._bus.now()))
        self._subscription = self._bus.subscribe(["*"], self._record, delivered=self._flush)

    def stopService(self) -> None:
        super().stopService()
        self._bus.flush()  # daemon:stopping and friends are still on their way
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self._close()

    def _record(self, event: Event) -> None:
        if event.topic in SKIPPED_TOPICS or self._settings.retention_days == 0:
            return
        try:
            self._write(event)
            self.last_error = None
        except (OSError, TypeError, ValueError) as exc:
            self._failed(exc)

    def _flush(self) -> None:
        """The lines of one delivery turn go to the file in one write."""
        if self._file is None:
            return
        try:
            self._file.flush()
        except (OSError, ValueError) as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.last_error = f"cannot write the event log in {self._directory}: {exc}"
        self.log.warn("event log write failed: {error}", error=str(exc))

    def _write(self, event: Event) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(event.timestamp))
        if day != self._day:
            self._close()
            self._prune(time.gmtime(event.timestamp))
            path = self._directory / f"{day}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab")
            self._size = os.fstat(fd).st_size
            self._day = day
            self._full = False
        if self._full or self._file is None:
            return
        line = _ENCODER.encode(
            {
                "timestamp": iso_utc(event.timestamp),
                "topic": event.topic,
                "source": event.source,
                "seq": event.seq,
                "payload": dict(event.payload),
            }
        ).encode() + b"\n"
        limit = int(self._settings.max_file_mb * 1024 * 1024)
        if self._size + len(line) > limit:
            marker = json.dumps({"timestamp": iso_utc(event.timestamp), "topic": "eventlog:truncated",
                                 "payload": {"limit_bytes": limit}}).encode() + b"\n"
            self._file.write(marker)
            self._file.flush()
            self._full = True
            return
        self._file.write(line)  # written out by _flush, at the end of the turn
        self._size += len(line)
        self.written += 1

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._day = None

    def _prune(self, today: time.struct_time) -> None:
        keep = self._settings.retention_days
        if keep <= 0:
            return
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(calendar.timegm(today) - (keep - 1) * 86400))
        try:
            names = os.listdir(self._directory)
        except OSError:
            return
        for name in names:
            match = _DAY_FILE.match(name)
            if match and match.group(1) < cutoff:
                try:
                    os.unlink(self._directory / name)
                except OSError:
                    pass

    # -- reload / status -----------------------------------------------------

    def apply_config(self, config: Config) -> None:
        self._settings = config.daemon.events

    def health_issues(self) -> list[str]:
        return [self.last_error] if self.last_error else []

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self._settings.retention_days > 0,
            "directory": str(self._directory),
            "written": self.written,
            "retention_days": self._settings.retention_days,
        }
