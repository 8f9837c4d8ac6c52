# tests: tests/daemon/test_logs.py
"""Log observers: a size-rotated daemon.log with a bounded number of old files,
JSON or text lines, level filtering, and stdout in the foreground."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from zope.interface import implementer

from aiwg.core.config import LogSettings
from aiwg.core.text import utf8_safe
from aiwg.core.timefmt import iso_utc

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def _level_name(event: dict[str, Any]) -> str:
    return getattr(event.get("log_level"), "name", "info")


class _CallFields:
    """The event's fields for `str.format_map`, with Twisted's `{name()}` calls."""

    __slots__ = ("_event",)

    def __init__(self, event: dict[str, Any]) -> None:
        self._event = event

    def __getitem__(self, key: str) -> Any:
        if key.endswith("()"):
            return self._event[key[:-2]]()
        return self._event[key]


def format_message(event: dict[str, Any]) -> str:
    """The event's message: what Twisted's `formatEvent` gives, at a fraction of its
    cost (it formats with `string.Formatter` in Python; `str.format_map` is C).
    Whatever the fast way cannot format goes to `formatEvent`, which never fails."""
    fmt = event.get("log_format")
    if type(fmt) is str and "log_flattened" not in event:
        try:
            return fmt.format_map(_CallFields(event) if "()" in fmt else event)
        except Exception:
            pass
    return formatEvent(event)


def _message(event: dict[str, Any]) -> str:
    text = format_message(event)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text += "\n" + failure.getTraceback()
    return utf8_safe(text)  # a lone surrogate would lose the whole line


def _namespace(event: dict[str, Any]) -> str:
    namespace = event.get("log_namespace") or "-"
    return namespace[5:] if namespace.startswith("aiwg.") else namespace


def format_text(event: dict[str, Any]) -> str:
    """One line per event: time, level, namespace, message (and a traceback if any)."""
    when = event.get("log_time") or time.time()
    text = _message(event).replace("\n", "\n    ")
    return f"{iso_utc(when)} {_level_name(event):<5} [{_namespace(event)}] {text}\n"


def format_json(event: dict[str, Any]) -> str:
    """One JSON object per line: time, level, namespace, message, and the event's own fields."""
    record: dict[str, Any] = {
        "time": iso_utc(event.get("log_time") or time.time()),
        "level": _level_name(event),
        "namespace": _namespace(event),
        "message": _message(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message", "isError", "system", "time"):
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            record[key] = value
    return json.dumps(record, default=str) + "\n"


#: Twisted's own chatter that says what our lines already say.
_NOISE = ("starting on ", "(UNIX Port ", "Starting factory", "Stopping factory")


def is_noise(event: dict[str, Any]) -> bool:
    if event.get("log_namespace") != "log_legacy":
        return False
    text = format_message(event)
    return any(marker in text for marker in _NOISE)


@implementer(ILogObserver)
class LevelFilteredObserver:
    """Wraps an observer with a minimum level that reload can change."""

    def __init__(self, observer: ILogObserver, level: str) -> None:
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
        self._filtered = FilteringLogObserver(observer, [self._predicate])

    def set_level(self, level: str) -> None:
        self._predicate.setLogLevelForNamespace(None, LEVELS[level])

    def __call__(self, event: dict[str, Any]) -> None:
        if not is_noise(event):
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


@implementer(ILogObserver)
class OncePerEvent:
    """Passes each event on once. Twisted's log beginner replays what it buffered
    before logging began to every observer there is, ours too when it was added
    first (as under `twist`, which begins logging after starting the services);
    until the reactor runs, the events seen are remembered to drop the replay."""

    def __init__(self, observer: Any) -> None:
        self._observer = observer
        self._seen: dict[int, Any] | None = {}  # id → event, held so that no id is reused meanwhile

    def __call__(self, event: dict[str, Any]) -> None:
        seen = self._seen
        if seen is not None:
            if id(event) in seen:
                return
            if len(seen) < 10_000:
                seen[id(event)] = event
        self._observer(event)

    def settle(self) -> None:
        """Logging has begun: nothing is replayed any more."""
        self._seen = None

    def __getattr__(self, name: str) -> Any:  # apply, close: the wrapped observer's
        return getattr(self._observer, name)


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


#: Set once the daemon's own log (daemon.log, or stdout in the foreground) takes events.
_own_log = {"started": False}


def own_log_started() -> None:
    _own_log["started"] = True


@implementer(ILogObserver)
class _ErrorsUntilOwnLog:
    """Errors on stderr until the daemon's own log starts, nothing after (it has
    them): a start that fails before then (another daemon holds the lock, say)
    still says why."""

    def __call__(self, event: dict[str, Any]) -> None:
        if _own_log["started"]:
            return
        level = event.get("log_level")
        if event.get("log_failure") is None and level not in (LogLevel.error, LogLevel.critical) \
                and not event.get("isError"):
            return
        failure = event.get("log_failure")
        text = str(failure.value) if isinstance(failure, Failure) else format_message(event)
        stream = sys.__stderr__  # sys.stderr may be Twisted's logging file by now
        if stream is not None and text.strip():
            stream.write(text.rstrip("\n") + "\n")
            stream.flush()


def startup_errors_observer() -> ILogObserver:
    """For `twistd aiwg` by itself (see tap.Options): twistd's own log replaced by
    the daemon's, except for the errors of a start that fails before it begins."""
    return _ErrorsUntilOwnLog()
