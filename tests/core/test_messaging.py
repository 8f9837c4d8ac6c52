"""Messaging's pure parts: commands, the allowlist, severities, splitting, escaping, notices."""

from __future__ import annotations

import pytest

from aiwg.core.messaging import (
    HELP,
    LIMITS,
    REFUSAL,
    Command,
    Inbound,
    age,
    allowed,
    at_least,
    notice_for,
    parse_command,
    result_text,
    slack_escape,
    split_text,
    status_text,
    tasks_text,
    telegram_html,
    umbrella,
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
    iteration = notice_for("task:iteration", {"taskId": "t-2", "iteration": 2, "maxIterations": 5, "passed": False,
                                              "checkExitCode": 1, "totalCostUsd": 0.5, "prompt": "Fix it"}, "p")
    assert iteration.title == "Task t-2: iteration 2/5, check failed (exit 1)"
    assert ("spent", "$0.5") in iteration.fields and ("prompt", "Fix it") in iteration.fields
    custom = notice_for("deployment:complete", {"version": "1.2.3"}, "p")
    assert custom.title == "deployment:complete" and ("version", "1.2.3") in custom.fields


# -- the shared answers: umbrella command, ages, /status, /tasks, results --------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tasks failed", Command("tasks", "failed")),
        ("  status ", Command("status")),
        ("/cancel t-9", Command("cancel", "t-9")),
        ("TASK Fix the build", Command("task", "Fix the build")),
        ("what does main.py do?", Command("chat", "what does main.py do?")),
        ("statuses please", Command("chat", "statuses please")),
        ("", Command("help")),
        ("   ", Command("help")),
    ],
)
def test_umbrella_command(text: str, expected: Command) -> None:
    """One registered `/aiwg …` command: a known word is that command, anything else is chat."""
    assert umbrella(text) == expected


@pytest.mark.parametrize(
    "seconds, expected",
    [(-5, "0s"), (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"),
     (3600 + 5 * 60, "1h05m"), (86399, "23h59m"), (86400, "1d0h"), (3 * 86400 + 7 * 3600 + 59, "3d7h")],
)
def test_age_is_short_and_never_negative(seconds: float, expected: str) -> None:
    """A clock step back must not show "-3s ago"."""
    assert age(seconds) == expected


def test_status_text_from_daemon_status() -> None:
    """/status: health, uptime, the queue and every health issue."""
    status = {"health": "degraded", "health_issues": ["low disk space", "log not writable"],
              "uptime_seconds": 7260,
              "subsystems": {"supervisor": {"running": 2, "queued": 5, "maxConcurrency": 3}}}
    assert status_text("/srv/app", status) == (
        "aiwg daemon for /srv/app: degraded, up 2h01m\n"
        "tasks: 2 running, 5 queued (at most 3 at once)\n"
        "- low disk space\n"
        "- log not writable"
    )


def test_status_text_tolerates_missing_parts() -> None:
    """A daemon still starting may lack subsystems; /status must still answer."""
    assert status_text("p", {}) == "aiwg daemon for p: unknown, up 0s\ntasks: 0 running, 0 queued (at most ? at once)"


def test_tasks_text_lists_newest_first_as_given() -> None:
    """/tasks: one line a task with its age and a prompt excerpt."""
    rows = [{"id": "t-2", "state": "running", "created": 1000.0, "prompt": "second\n  task"},
            {"id": "t-1", "state": "failed", "created": 100.0, "prompt": "x" * 100}]
    text = tasks_text(rows, now=1030.0, state=None)
    lines = text.splitlines()
    assert lines[0] == "Recent tasks:"
    assert lines[1] == "t-2  running    30s ago  second task"
    assert lines[2].startswith("t-1  failed     15m ago  " + "x" * 59) and lines[2].endswith("…")
    assert tasks_text(rows[1:], now=200.0, state="failed").startswith("Recent tasks (failed):\n")


def test_tasks_text_when_there_are_none() -> None:
    """An empty list says so, naming the state asked for."""
    assert tasks_text([], now=0, state=None) == "No tasks yet."
    assert tasks_text([], now=0, state="queued") == "No queued tasks."


def test_result_text() -> None:
    """A /task's outcome: the result when it completed, the error and output tail otherwise."""
    assert result_text({"id": "t-1", "state": "completed", "duration": 2500, "result": "All good"}) == \
        "Task t-1 completed in 2.5s:\nAll good"
    assert result_text({"id": "t-1", "state": "completed"}) == "Task t-1 completed."
    failed = result_text({"id": "t-2", "state": "failed", "duration": 61_000, "error": "exit 3",
                          "output": "a" * 2000 + "END"})
    head, tail = failed.split("\n", 1)
    assert head == "Task t-2 failed in 1m01s: exit 3"
    assert len(tail) == 1500 and tail.endswith("END")  # the end of the output, where the error is
    assert result_text({"id": "t-3", "state": "cancelled"}) == "Task t-3 cancelled."


def test_help_refusal_and_inbound() -> None:
    """HELP names every command; REFUSAL tells the user their id; Inbound defaults to no command."""
    for name in ("/status", "/tasks", "/task", "/cancel", "/help"):
        assert name in HELP
    assert "42" in REFUSAL.format(user="42")
    message = Inbound(platform="telegram", user="1", chat="2", text="hi", where={"chat_id": 2},
                      conversation="telegram:2")
    assert message.command is None and message.must_answer is False and message.user_name == ""
