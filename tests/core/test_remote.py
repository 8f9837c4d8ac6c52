"""What the daemon and a worker agree on: keys, the payload, the report, URLs
fit to show, and the configuration's checks of executors."""

from __future__ import annotations

import pytest

from aiwg.core.config import validate
from aiwg.core.remote import (Keys, Payload, PayloadError, Report, broker_warnings, configured_executors,
                              executor_problems, namespace_for, remote_settings, shown_url, url_problem)
from aiwg.errors import ConfigError


def payload(**changes: object) -> Payload:
    values: dict[str, object] = dict(
        namespace="ns", task_id="t-1", prompt="fix it", program="claude", argv=("-p", "--", "fix it"),
        env={"API_TOKEN": "${API_TOKEN}"}, output_format="claude-json", timeout_seconds=60.0,
        kill_grace_seconds=5.0, output_max_bytes=1000, git_remote="/srv/git/p.git", base="a" * 40,
        branch="aiwg/t-1", commit_message="aiwg t-1", author=("A", "a@example.invalid"))
    values.update(changes)
    return Payload(**values)  # type: ignore[arg-type]


def test_a_payload_travels_as_json_and_back() -> None:
    sent = payload()
    assert Payload.from_json(sent.to_json()) == sent
    assert sent.to_json()["env"] == {"API_TOKEN": "${API_TOKEN}"}  # a template, never a value


def test_a_payload_of_another_version_or_malformed_is_refused_saying_why() -> None:
    with pytest.raises(PayloadError, match="version 2"):
        Payload.from_json({**payload().to_json(), "version": 2})
    broken = payload().to_json()
    del broken["base"]
    with pytest.raises(PayloadError, match="malformed.*base"):
        Payload.from_json(broken)
    with pytest.raises(PayloadError, match="not an object"):
        Payload.from_json(["x"])  # type: ignore[arg-type]


def test_a_report_round_trips_and_ignores_wrong_types() -> None:
    report = Report(worker="w1@h", exit_code=0, head="b" * 40, output_bytes=12)
    assert Report.from_json(report.to_json()) == report
    assert Report.from_json('{"worker": "w", "exit_code": "0", "signal": 9}') == Report(worker="w", signal=9)


def test_keys_are_per_project_and_per_task() -> None:
    keys = Keys(namespace_for("/p", host="h1"))
    other = Keys(namespace_for("/p", host="h2"))
    assert keys.events != other.events
    assert keys.lease("t-1").startswith(keys.prefix) and keys.lease("t-1") != keys.claim("t-1")


def test_urls_are_shown_without_their_password_and_checked() -> None:
    assert shown_url("redis://:s3cret@host:6380/1") == "redis://:***@host:6380/1"
    assert shown_url("rediss://user:pw@host/0") == "rediss://user:***@host/0"
    assert shown_url("redis://host:6379/0") == "redis://host:6379/0"
    assert url_problem("rediss://host:6380/0") is None
    assert "amqp" in (url_problem("amqp://host//") or "")
    assert "no host" in (url_problem("redis:///0") or "")


def test_executors_named_anywhere_must_be_configured() -> None:
    section = {"default": "celery"}
    problems = executor_problems(section, [("actions.a", {"prompt": "x", "executor": "kube"})])
    assert "executors.default: executor 'celery' is not configured (configure executors.celery)" in problems
    assert any(p.startswith("actions.a.executor: executor 'kube' is not configured") for p in problems)
    configured = {"celery": {"broker": "redis://h/0", "git_remote": "/g"}}
    assert configured_executors(configured) == ["local", "celery"]
    assert executor_problems(configured, [("rules[0].action", {"prompt": "x", "executor": "celery"})]) == []
    loop = executor_problems(configured, [("actions.l", {"prompt": "x", "until": "make", "executor": "celery"})])
    assert loop == ["actions.l.executor: a loop (until) runs on the local executor only"]


def test_the_configuration_checks_the_broker_and_warns_of_a_literal_password() -> None:
    with pytest.raises(ConfigError, match=r"executors.celery.broker: amqp://h//: scheme 'amqp'"):
        validate({"executors": {"celery": {"broker": "amqp://h//", "git_remote": "/g"}}}, "t")
    with pytest.raises(ConfigError, match="git_remote"):
        validate({"executors": {"celery": {"broker": "redis://h/0"}}}, "t")
    config = validate({"executors": {"celery": {"broker": "redis://:pw@h/0", "git_remote": "/g"}}}, "t")
    assert any("executors.celery.broker: a literal password" in w for w in config.warnings)
    assert broker_warnings({"celery": {"broker": "redis://:${PW}@h/0"}}) == []
    settings = remote_settings(config.data["executors"])["celery"]
    assert (settings.queue, settings.git_remote, settings.max_in_flight) == ("aiwg", "/g", None)


def test_a_literal_broker_password_is_redacted_where_the_configuration_is_shown() -> None:
    from aiwg.core.config import redacted

    data = {"executors": {"celery": {"broker": "redis://:pw@h/0", "backend": "redis://:${PW}@h/1",
                                     "git_remote": "/g"}}}
    shown = redacted(data)["executors"]["celery"]
    assert shown["broker"] == "[redacted]" and shown["backend"] == "redis://:${PW}@h/1"
