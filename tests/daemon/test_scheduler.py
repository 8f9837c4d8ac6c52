"""The scheduler service with an injected Clock: jobs armed, fired, published, reloaded."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from twisted.internet.task import Clock

from aiwg.core.config import validate
from aiwg.daemon.bus import EventBus
from aiwg.daemon.automation.scheduler import Scheduler


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class FakeTask:
    def __init__(self, id: str) -> None:
        self.id = id


class Harness:
    def __init__(self, document: dict[str, Any], start: str = "2026-03-01 10:00:30") -> None:
        self.clock = Clock()
        self.clock.advance(at(start))
        self.bus = EventBus(reactor=self.clock)
        self.events: list[Any] = []
        self.bus.subscribe(["*"], self.events.append)
        self.submitted: list[tuple[dict, str, dict]] = []
        self.health_checks = 0
        self.scheduler = Scheduler(reactor=self.clock, bus=self.bus, config=validate(document, "test"),
                                   submit=self.submit, health_check=self.health_check)

    def submit(self, spec: dict, source: str, metadata: dict) -> FakeTask:
        self.submitted.append((spec, source, metadata))
        return FakeTask(f"t-{len(self.submitted)}")

    def health_check(self) -> dict:
        self.health_checks += 1
        return {"status": "healthy", "issues": []}

    def topics(self) -> list[str]:
        return [e.topic for e in self.events]


CONFIG = {
    "schedule": {"enabled": True, "timezone": "UTC", "jobs": [
        {"name": "health", "cron": "*/30 * * * *", "action": "health-check"},
        {"name": "audit", "cron": "0 11 * * *", "action": "security-audit"},
        {"name": "off", "cron": "* * * * *", "action": "health-check", "enabled": False},
    ]},
    "actions": {"security-audit": {"prompt": "Audit dependencies", "priority": 5, "timeout": 30}},
}


def test_jobs_fire_their_actions_and_publish_schedule_fired() -> None:
    h = Harness(CONFIG)
    h.scheduler.startService()
    assert len(h.clock.getDelayedCalls()) == 2  # one timer per enabled job, nothing polls
    h.clock.advance(at("2026-03-01 10:30:00") - h.clock.seconds())
    assert h.health_checks == 1
    h.clock.advance(at("2026-03-01 11:00:00") - h.clock.seconds())
    assert h.health_checks == 2
    assert h.submitted == [({"prompt": "Audit dependencies", "priority": 5, "timeout": 30},
                            "schedule:audit", {"schedule": "audit", "action": "security-audit"})]
    fired = [e.payload for e in h.events if e.topic == "schedule:fired"]
    assert sorted(p["job"] for p in fired) == ["audit", "health", "health"]  # two due at 11:00
    audit = next(p for p in fired if p["job"] == "audit")
    assert audit["action"] == "security-audit" and audit["scheduled"] == "2026-03-01T11:00:00.000Z"
    jobs = {j["name"]: j for j in h.scheduler.job_list()}
    assert jobs["audit"]["lastTaskId"] == "t-1" and jobs["audit"]["fires"] == 1
    assert jobs["health"]["nextFire"] == "2026-03-01T11:30:00.000Z"
    assert jobs["off"]["nextFire"] is None and jobs["off"]["enabled"] is False


def test_a_clock_jump_skips_once_and_publishes_schedule_skipped() -> None:
    h = Harness(CONFIG)
    h.scheduler.startService()
    h.clock.advance(5 * 3600)
    assert h.health_checks == 0 and h.submitted == []
    skipped = [e.payload["job"] for e in h.events if e.topic == "schedule:skipped"]
    assert sorted(skipped) == ["audit", "health"]  # each once, however many slots were missed


def test_a_failing_action_is_recorded_and_the_job_keeps_its_schedule() -> None:
    h = Harness(CONFIG)

    def refuse(spec: dict, source: str, metadata: dict) -> Any:
        raise RuntimeError("Supervisor is shutting down")

    h.scheduler._submit = refuse
    h.scheduler.startService()
    h.clock.advance(at("2026-03-01 11:00:00") - h.clock.seconds())
    job = {j["name"]: j for j in h.scheduler.job_list()}["audit"]
    assert job["lastError"] == "Supervisor is shutting down"
    assert h.scheduler.health_issues() == ["schedule audit: last run failed: Supervisor is shutting down"]
    assert job["nextFire"] == "2026-03-02T11:00:00.000Z"


def test_reload_rearms_changed_jobs_and_keeps_counters() -> None:
    h = Harness(CONFIG)
    h.scheduler.startService()
    h.clock.advance(at("2026-03-01 10:30:00") - h.clock.seconds())
    changed = dict(CONFIG, schedule=dict(CONFIG["schedule"], jobs=[{"name": "health", "cron": "*/10 * * * *", "action": "health-check"}]))
    h.scheduler.apply_config(validate(changed, "test"))
    assert len(h.clock.getDelayedCalls()) == 1
    jobs = h.scheduler.job_list()
    assert [j["name"] for j in jobs] == ["health"]
    assert jobs[0]["fires"] == 1 and jobs[0]["nextFire"] == "2026-03-01T10:40:00.000Z"


def test_disabled_scheduler_arms_nothing_and_stop_disarms() -> None:
    h = Harness({"schedule": dict(CONFIG["schedule"], enabled=False), "actions": CONFIG["actions"]})
    h.scheduler.startService()
    assert h.clock.getDelayedCalls() == [] and h.scheduler.status() == {"enabled": False}
    h2 = Harness(CONFIG)
    h2.scheduler.startService()
    h2.scheduler.stopService()
    assert h2.clock.getDelayedCalls() == []
