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


#: Wildcards allowed in one pattern: enough for any real use, and matching stays cheap.
MAX_WILDCARDS = 8


def topic_problem(topic: Any, *, external: bool) -> str | None:
    """Why `topic` cannot be published (None if it can). External = from a client."""
    if not isinstance(topic, str) or not topic:
        return "must be a non-empty string"
    if not _TOPIC.fullmatch(topic):
        return (
            "must be at most 128 characters of letters, digits and _ . : / -, "
            f"got '{topic}'"
        )
    if external and topic.startswith(RESERVED_PREFIXES):
        return f"'{topic}' is in a namespace reserved for the daemon ({topic.split(':')[0]}:*)"
    return None


def pattern_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
        return f"must be a topic or a pattern with * wildcards, got {pattern!r}"
    if pattern.count("*") > MAX_WILDCARDS:
        return f"at most {MAX_WILDCARDS} * wildcards, got {pattern!r}"
    return None


@lru_cache(maxsize=1024)
def _parts(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("*"))


def topic_matches(pattern: str, topic: str) -> bool:
    """`*` matches any run of characters, colons included: `task:*`, `*:failed`, `*`.

    Linear in the topic's length (no regular expression to backtrack): the literal
    pieces between the stars must appear in order, the first at the start and the
    last at the end."""
    if pattern == "*" or pattern == topic:
        return True
    if "*" not in pattern:
        return False
    parts = _parts(pattern)
    first, last = parts[0], parts[-1]
    if len(first) + len(last) > len(topic) or not topic.startswith(first) or not topic.endswith(last):
        return False
    position, end = len(first), len(topic) - len(last)
    for middle in parts[1:-1]:
        if not middle:
            continue
        found = topic.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return True
