# tests: tests/core/test_events.py
"""Event values, topic names and topic patterns (`task:*`, `*`)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

from attrs import field, frozen

#: Namespaces the daemon publishes in; clients may not forge events there.
RESERVED_PREFIXES = (
    "task:",
    "daemon:",
    "file:",
    "schedule:",
    "health:",
    "automation:",
    "chat:",
    "messaging:",
)

_TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.:/*-]{1,128}$")


@frozen
class Event:
    topic: str
    payload: Mapping[str, Any] = field(factory=dict)
    timestamp: float = 0.0
    source: str = "daemon"
    seq: int = 0


def topic_problem(topic: Any, *, external: bool) -> str | None:
    """Why `topic` cannot be published (None if it can). External = from a client."""
    if not isinstance(topic, str) or not topic:
        return "must be a non-empty string"
    if not _TOPIC.match(topic):
        return (
            "must be at most 128 characters of letters, digits and _ . : / -, "
            f"got '{topic}'"
        )
    if external and topic.startswith(RESERVED_PREFIXES):
        return f"'{topic}' is in a namespace reserved for the daemon ({topic.split(':')[0]}:*)"
    return None


def pattern_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str) or not _PATTERN.match(pattern):
        return f"must be a topic or a pattern with * wildcards, got {pattern!r}"
    return None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


def topic_matches(pattern: str, topic: str) -> bool:
    """`*` matches any run of characters, colons included: `task:*`, `*:failed`, `*`."""
    if pattern == "*" or pattern == topic:
        return True
    if "*" not in pattern:
        return False
    return _compile(pattern).match(topic) is not None
