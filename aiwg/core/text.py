# tests: tests/core/test_text.py
"""Text that can always be written as UTF-8.

Python strings may hold lone surrogates: a JSON escape such as `\\ud800` decodes to
one, and a file name that is not UTF-8 comes from the OS with its stray bytes as
`\\udcXX`. Such a string cannot be encoded, so a file, a log line or an SQLite row
that gets one fails as a whole. What the daemon writes passes through here first.
"""

from __future__ import annotations


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in `text`, or None (one scan, and none for ASCII)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def utf8_safe(text: str) -> str:
    """`text`, with each lone surrogate written as its escape (`\\udcff`)."""
    if lone_surrogate(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def display_path(path: str) -> str:
    """A path as text a person can read: bytes that are not UTF-8 (which Python
    holds as surrogates) shown as `\\xff`, the rest unchanged."""
    if lone_surrogate(path) is None:
        return path
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        return utf8_safe(path)
