"""daemon.log rotates at max_size_mb and keeps at most max_files old copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.logger import LogLevel, Logger, formatEvent

from aiwg.core.config import LogSettings
from aiwg.daemon.logs import RotatingFileObserver, format_message, format_text


def event(text: str, level: LogLevel = LogLevel.info) -> dict:
    return {"log_format": "{text}", "text": text, "log_level": level, "log_time": 1_700_000_000.5,
            "log_namespace": "aiwg.daemon.test"}


def test_rotation_is_bounded_in_size_and_count(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    settings = LogSettings(max_size_mb=0.01, max_files=3, level="info", format="text")  # ~10 KiB
    observer = RotatingFileObserver(path, settings)
    for i in range(2000):
        observer(event(f"line {i:05d} " + "x" * 80))
    observer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["daemon.log", "daemon.log.1", "daemon.log.2", "daemon.log.3"]
    limit = settings.max_bytes + 200  # one record may straddle the limit
    for name in names:
        assert (tmp_path / name).stat().st_size <= limit, name
    # The newest lines are in daemon.log, older ones in .1, .2, .3 in order.
    assert "line 01999" in path.read_text()
    assert (tmp_path / "daemon.log.1").stat().st_mtime <= path.stat().st_mtime


def test_level_filter_and_reload_of_settings(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    observer = RotatingFileObserver(path, LogSettings(50, 5, "warn", "text"))
    observer(event("hidden", LogLevel.info))
    observer(event("shown", LogLevel.warn))
    observer.apply(LogSettings(50, 5, "debug", "json"))
    observer(event("debug now", LogLevel.debug))
    observer.close()
    text = path.read_text()
    assert "hidden" not in text and "shown" in text
    record = json.loads(text.splitlines()[-1])
    assert record["message"] == "debug now" and record["level"] == "debug"
    assert record["time"] == "2023-11-14T22:13:20.500Z" and record["text"] == "debug now"


def test_text_format() -> None:
    line = format_text(event("hello\nworld"))
    assert line == "2023-11-14T22:13:20.500Z info  [daemon.test] hello\n    world\n"


def test_logger_failures_include_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    observer = RotatingFileObserver(path, LogSettings(50, 5, "info", "text"))
    log = Logger(observer=observer, namespace="aiwg.test")
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("it broke")
    observer.close()
    text = path.read_text()
    assert "it broke" in text and "ZeroDivisionError" in text


def test_levels_are_named_in_each_line(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    observer = RotatingFileObserver(path, LogSettings(50, 5, "debug", "text"))
    for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
        observer(event(level.name, level))
    observer.close()
    levels = [line.split()[1] for line in path.read_text().splitlines()]
    assert levels == ["debug", "info", "warn", "error", "critical"]


def test_twisted_port_chatter_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    observer = RotatingFileObserver(path, LogSettings(50, 5, "info", "text"))
    observer({"log_namespace": "log_legacy", "log_format": "{log_text}", "log_level": LogLevel.info,
              "log_text": "IpcFactory starting on '/x.sock'", "log_time": 1.0})
    observer(event("kept"))
    observer.close()
    assert path.read_text().count("\n") == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"log_format": "task {task_id} {state} (exit {code}, {duration:.1f}s)",
         "task_id": "t-1", "state": "completed", "code": 0, "duration": 0.25},
        {"log_format": "{who()} has {n[0]} and {obj.real}", "who": lambda: "it", "n": [7], "obj": 3},
        {"log_format": "missing {nope}"},
        {"log_format": "positional {}"},
        {"log_format": "broken {"},
        {"log_format": b"bytes {x!r}", "x": "y"},
        {"log_format": None},
        {},
    ],
    ids=["fields", "calls-items-attributes", "missing", "positional", "broken", "bytes", "none", "empty"],
)
def test_messages_read_as_twisted_formats_them(fields: dict) -> None:
    assert format_message(dict(fields)) == formatEvent(dict(fields))
