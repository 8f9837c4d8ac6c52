# tests: tests/daemon/test_logs.py
"""Log observers: a size-rotated daemon.log with a bounded number of old files,
JSON or text lines, level filtering, and stdout in the foreground."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any, Callable

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from zope.interface import implementer

from aiwg.core.config import LogSettings

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def iso_utc(when: float) -> str:
    """`2026-11-24T19:44:48.123Z`: the timestamp format of every file we write."""
    seconds = int(when)
    millis = int((when - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def format_text(event: dict[str, Any]) -> str:
    """One line per event: time, level, namespace, message (and a traceback if any)."""
    level = event.get("log_level")
    name = level.name if isinstance(level, LogLevel) else "info"
    namespace = event.get("log_namespace") or "-"
    if namespace.startswith("aiwg."):
        namespace = namespace[5:]
    text = formatEvent(event)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text += "\n" + failure.getTraceback()
    elif "log_text" in event:
        text = event["log_text"]
    when = event.get("log_time") or time.time()
    text = text.replace("\n", "\n    ")
    return f"{iso_utc(when)} {name:<5} [{namespace}] {text}\n"


def format_json(event: dict[str, Any]) -> str:
    return eventAsJSON(event) + "\n"


@implementer(ILogObserver)
class LevelFilteredObserver:
    """Wraps an observer with a minimum level that reload can change."""

    def __init__(self, observer: ILogObserver, level: str) -> None:
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
        self._filtered = FilteringLogObserver(observer, [self._predicate])

    def set_level(self, level: str) -> None:
        self._predicate.setLogLevelForNamespace(None, LEVELS[level])

    def __call__(self, event: dict[str, Any]) -> None:
        self._filtered(event)


@implementer(ILogObserver)
class RotatingFileObserver:
    """daemon.log, rotated at `max_size_mb`, keeping `max_files` old copies.

    Twisted's LogFile keeps every rotated file unless told otherwise; here the
    limit is always set, and reload can change size, count, level and format.
    """

    def __init__(self, path: Path, settings: LogSettings) -> None:
        self._logfile = LogFile(
            path.name,
            str(path.parent),
            rotateLength=settings.max_bytes,
            defaultMode=0o600,
            maxRotatedFiles=settings.max_files,
        )
        self._format: Callable[[dict[str, Any]], str] = format_text
        self._level = LevelFilteredObserver(self._write, settings.level)
        self.apply(settings)

    def apply(self, settings: LogSettings) -> None:
        self._logfile.rotateLength = settings.max_bytes
        self._logfile.maxRotatedFiles = settings.max_files
        self._format = format_json if settings.format == "json" else format_text
        self._level.set_level(settings.level)

    @property
    def path(self) -> str:
        return str(self._logfile.path)

    def _write(self, event: dict[str, Any]) -> None:
        try:
            self._logfile.write(self._format(event))
            self._logfile.flush()
        except Exception:
            # A full disk must not take the daemon down with it.
            pass

    def __call__(self, event: dict[str, Any]) -> None:
        self._level(event)

    def close(self) -> None:
        self._logfile.close()


def stream_observer(stream: IO[str], settings: LogSettings) -> LevelFilteredObserver:
    """Our line format on a stream (stdout in the foreground)."""
    formatter = format_json if settings.format == "json" else format_text
    return LevelFilteredObserver(FileLogObserver(stream, formatter), settings.level)


@implementer(ILogObserver)
class _Discard:
    def __call__(self, event: dict[str, Any]) -> None:
        pass


def discard_observer() -> ILogObserver:
    """For twistd's --logger: the daemon writes its own log, so twistd's is not wanted."""
    return _Discard()

