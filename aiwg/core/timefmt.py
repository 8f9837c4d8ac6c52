# tests: tests/core/test_timefmt.py
"""The one timestamp format of every file the daemon writes and of the wire:
`2026-11-24T19:44:48.123Z`. Pure: the time is an argument."""

from __future__ import annotations

import calendar
import time
from typing import Any

_iso_cache: list = [None, "", None, ""]


def iso_utc(when: float) -> str:
    """`2026-11-24T19:44:48.123Z`: the timestamp format of every file we write.
    (Cached per millisecond and per second: `ping` calls this on every request.)"""
    millis_total = int(when * 1000)
    if _iso_cache[2] == millis_total:
        return _iso_cache[3]
    seconds, millis = divmod(millis_total, 1000)
    if _iso_cache[0] != seconds:
        _iso_cache[0] = seconds
        _iso_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    text = f"{_iso_cache[1]}.{millis:03d}Z"
    _iso_cache[2], _iso_cache[3] = millis_total, text
    return text


def parse_iso(text: Any) -> float | None:
    """The epoch seconds of an `iso_utc` timestamp; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        head, _, rest = text.rstrip("Z").partition(".")
        seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (int(rest[:3].ljust(3, "0")) / 1000 if rest else 0.0)
    except ValueError:
        return None
