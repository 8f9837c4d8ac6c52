"""Topic names and patterns."""

from __future__ import annotations

import pytest

from aiwg.core.events import pattern_problem, topic_matches, topic_problem


@pytest.mark.parametrize(
    "pattern, topic, expected",
    [
        ("*", "task:completed", True),
        ("task:*", "task:completed", True),
        ("task:*", "task:", True),
        ("task:*", "tasks:completed", False),
        ("*:failed", "task:failed", True),
        ("*:failed", "task:failed:x", False),
        ("deployment:complete", "deployment:complete", True),
        ("deployment:complete", "deployment:completed", False),
        ("a.b:*", "a.b:c", True),
        ("a.b:*", "aXb:c", False),  # dots are literal
        ("file:*:x", "file:changed:x", True),
        ("a*a", "a", False),  # the pieces may not overlap
        ("a*a", "aa", True),
        ("*a*b*", "xxaxxbxx", True),
        ("*a*b*", "xxbxxaxx", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_topic_problems() -> None:
    assert topic_problem("deployment:complete", external=True) is None
    assert topic_problem("task:completed", external=False) is None
    assert "reserved" in topic_problem("task:completed", external=True)
    assert "non-empty" in topic_problem("", external=True)
    assert "non-empty" in topic_problem(5, external=True)
    assert "at most 128" in topic_problem("has space", external=True)
    assert "at most 128" in topic_problem("x" * 129, external=True)


def test_pattern_problems() -> None:
    assert pattern_problem("task:*") is None
    assert pattern_problem("") is not None
    assert pattern_problem(["x"]) is not None


def test_matching_stays_linear_for_hostile_patterns() -> None:
    import time

    started = time.perf_counter()
    assert not topic_matches("*a*a*a*a*a*a*a*b", "a" * 5000)
    assert time.perf_counter() - started < 0.1


def test_patterns_and_topics_are_whole_strings() -> None:
    assert topic_problem("x:y\n", external=True) is not None
    assert pattern_problem("task:*\n") is not None
    assert pattern_problem("*" * 9) is not None
