"""Messaging's pure parts: commands, the allowlist, severities, splitting, escaping, notices."""

from __future__ import annotations

import pytest

from aiwg.core.messaging import (
    LIMITS,
    Command,
    allowed,
    at_least,
    notice_for,
    parse_command,
    slack_escape,
    split_text,
    telegram_html,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/status", Command("status")),
        ("  /tasks failed ", Command("tasks", "failed")),
        ("/task fix the flaky test in src/a.ts", Command("task", "fix the flaky test in src/a.ts")),
        ("/cancel t-abc123", Command("cancel", "t-abc123")),
        ("/status@aiwg_bot", Command("status")),
        ("/status@other_bot", Command("chat", "/status@other_bot")),
        ("/frobnicate now", Command("unknown", "frobnicate")),
        ("what does main.py do?", Command("chat", "what does main.py do?")),
        ("/HELP", Command("help")),
    ],
)
def test_commands(text: str, expected: Command) -> None:
    assert parse_command(text, bot_name="aiwg_bot") == expected


def test_an_empty_allowlist_admits_nobody() -> None:
    assert not allowed("42", "100", [], [])
    assert allowed(42, None, ["42"], [])
    assert allowed("7", -100123, [], [-100123])
    assert not allowed("7", "-1", ["42"], ["-100123"])
    assert not allowed(None, None, ["None"], [])


def test_severity_threshold() -> None:
    assert at_least("task:failed", "error") and at_least("task:failed", "info")
    assert not at_least("task:completed", "warning")
    assert at_least("automation:throttled", "warning") and not at_least("automation:throttled", "error")


@pytest.mark.parametrize("platform", sorted(LIMITS))
def test_long_answers_split_within_the_limit_and_lose_nothing(platform: str) -> None:
    limit = LIMITS[platform]
    text = "\n".join(f"line {i}: " + "word " * (i % 40) for i in range(3000))
    pieces = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    assert "".join(p.replace("\n", "").replace(" ", "") for p in pieces) == text.replace("\n", "").replace(" ", "")


def test_split_cuts_at_a_newline_then_a_space_then_anywhere() -> None:
    assert split_text("aaaa\nbbbb", 6) == ["aaaa", "bbbb"]
    assert split_text("aaaa bbbb", 6) == ["aaaa", "bbbb"]
    assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert split_text("", 10) == [""]


def test_escaping() -> None:
    assert telegram_html("if a < b && c > d") == "if a &lt; b &amp;&amp; c &gt; d"
    assert slack_escape("<@U123> & <!channel>") == "&lt;@U123&gt; &amp; &lt;!channel&gt;"


def test_task_failure_notice() -> None:
    notice = notice_for("task:failed", {"taskId": "t-1", "state": "failed", "prompt": "Run   the\ntests",
                                        "duration": 83_000, "exitCode": 3, "error": "agent exited with code 3",
                                        "outputTail": "FAILED tests/test_x.py"}, "/srv/app")
    assert notice.title == "Task t-1 failed" and notice.severity == "error"
    assert dict(notice.fields) == {"project": "/srv/app", "prompt": "Run the tests", "duration": "1m23s",
                                   "exit code": "3", "error": "agent exited with code 3"}
    assert notice.body == "FAILED tests/test_x.py"
    assert notice.plain().startswith("Task t-1 failed\nproject: /srv/app\n")


def test_other_notices() -> None:
    health = notice_for("health:degraded", {"issues": ["low disk space: 50 MiB free"]}, "p")
    assert health.title == "Daemon health degraded" and health.body == "- low disk space: 50 MiB free"
    throttled = notice_for("automation:throttled", {"ruleId": "loop", "reason": "fired 10 times"}, "p")
    assert throttled.title == "Automation throttled: rule loop" and ("reason", "fired 10 times") in throttled.fields
    custom = notice_for("deployment:complete", {"version": "1.2.3"}, "p")
    assert custom.title == "deployment:complete" and ("version", "1.2.3") in custom.fields
