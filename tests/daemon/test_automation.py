"""The rules engine with an injected Clock and a real EventBus: triggers, debounce,
loop guard (rate and chain depth), enable/disable persistence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from aiwg.core.config import validate
from aiwg.daemon.automation.engine import AutomationEngine
from aiwg.daemon.bus import EventBus
from aiwg.errors import InvalidParams


class FakeTask:
    def __init__(self, id: str) -> None:
        self.id = id


def rule(id: str, trigger: dict, prompt: str = "do {rule.id}", condition: dict | None = None, **extra: Any) -> dict:
    out: dict[str, Any] = {"id": id, "trigger": trigger, "action": {"type": "submit_task", "prompt": prompt, **extra.pop("action", {})}}
    if condition:
        out["condition"] = condition
    out.update(extra)
    return out


class Harness:
    def __init__(self, tmp_path: Path, rules: list[dict], **top: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.bus = EventBus(reactor=self.clock)
        self.events: list[Any] = []
        self.bus.subscribe(["*"], self.events.append)
        self.submitted: list[tuple[dict, str, dict]] = []
        self.depths: dict[str, int] = {}
        self.state_file = tmp_path / "automation.json"
        self.config = validate({"rules": rules, **top}, "test")
        self.engine = self.make_engine()

    def make_engine(self) -> AutomationEngine:
        return AutomationEngine(reactor=self.clock, bus=self.bus, config=self.config, submit=self.submit,
                                task_depth=lambda tid: self.depths.get(tid), state_file=self.state_file)

    def submit(self, spec: dict, source: str, metadata: dict) -> FakeTask:
        self.submitted.append((spec, source, metadata))
        task = FakeTask(f"t-{len(self.submitted)}")
        self.depths[task.id] = spec["chain_depth"]
        return task

    def publish(self, topic: str, payload: dict | None = None, source: str = "daemon") -> None:
        self.bus.publish(topic, payload or {}, source=source)
        self.clock.advance(0)  # deliver

    def files(self, *paths: str) -> None:
        self.publish("file:changed", {"changes": [{"path": p, "kind": "modified"} for p in paths],
                                      "paths": list(paths), "count": len(paths)}, source="watch")

    def topics(self, prefix: str) -> list[Any]:
        return [e.payload for e in self.events if e.topic.startswith(prefix)]


def test_file_rule_fires_with_the_matching_files_in_its_prompt(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("tests", {"type": "file_change", "pattern": "src/**/*.{ts,js}"},
                                "Run tests for:\n{files}", action={"priority": 3})])
    h.engine.startService()
    h.files("src/a.ts", "docs/x.md", "src/deep/b.js")
    assert len(h.submitted) == 1
    spec, source, metadata = h.submitted[0]
    assert spec["prompt"] == "Run tests for:\nsrc/a.ts\nsrc/deep/b.js"
    assert spec["priority"] == 3 and source == "rule:tests"
    assert spec["chain_depth"] == 1
    assert metadata == {"ruleId": "tests", "trigger": "file:changed",
                        "files": ["src/a.ts", "src/deep/b.js"], "fileCount": 2}
    h.files("docs/only.md")
    assert len(h.submitted) == 1
    assert h.topics("automation:fired")[0]["taskId"] == "t-1"


def test_debounce_is_trailing_and_per_rule(tmp_path: Path) -> None:
    h = Harness(tmp_path, [
        rule("slow", {"type": "file_change", "pattern": "src/**"}, "{files}", {"type": "debounce", "interval_ms": 5000}),
        rule("fast", {"type": "file_change", "pattern": "src/**"}, "{files}"),
    ])
    h.engine.startService()
    for i in range(4):
        h.files(f"src/f{i}.ts")
        h.clock.advance(2)  # activity keeps coming within the interval
    assert [s for _, s, _ in h.submitted] == ["rule:fast"] * 4
    h.clock.advance(2.9)
    assert len(h.submitted) == 4
    h.clock.advance(0.1)  # 5 s after the last matching change
    assert h.submitted[-1][1] == "rule:slow"
    assert h.submitted[-1][0]["prompt"] == "src/f0.ts\nsrc/f1.ts\nsrc/f2.ts\nsrc/f3.ts"
    h.clock.advance(60)
    assert len(h.submitted) == 5


def test_event_rule_templates_topic_and_payload(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("smoke", {"type": "event", "topic": "deployment:*"},
                                "Smoke-test {event.payload.version} after {event.topic} ({rule.id}) {event.payload.nope}")])
    h.engine.startService()
    h.publish("deployment:complete", {"version": "1.2.3"}, source="client")
    assert h.submitted[0][0]["prompt"] == "Smoke-test 1.2.3 after deployment:complete (smoke) {event.payload.nope}"
    h.publish("deploy:other")
    assert len(h.submitted) == 1


def test_rate_limit_throttles_and_publishes(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("busy", {"type": "event", "topic": "ping:*"})],
                automation={"max_fires_per_minute": 3})
    h.engine.startService()
    for _ in range(5):
        h.publish("ping:x")
    assert len(h.submitted) == 3
    throttled = h.topics("automation:throttled")
    assert len(throttled) == 2 and throttled[0]["ruleId"] == "busy"
    assert "limit 3" in throttled[0]["reason"]
    status = h.engine.status()["rules"][0]
    assert status["fireCount"] == 3 and status["throttledCount"] == 2
    h.clock.advance(60)
    h.publish("ping:x")
    assert len(h.submitted) == 4  # the window has moved on


def test_per_rule_rate_limit_overrides_the_default(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("one", {"type": "event", "topic": "x"}, max_fires_per_minute=1)])
    h.engine.startService()
    h.publish("x")
    h.publish("x")
    assert len(h.submitted) == 1 and len(h.topics("automation:throttled")) == 1


def test_a_rule_reacting_to_its_own_tasks_stops_at_the_chain_depth(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("loop", {"type": "event", "topic": "task:completed"})])
    h.engine.startService()
    h.publish("task:completed", {"taskId": "t-user"})  # a user's task: depth 0
    for _ in range(10):  # each of the rule's tasks completes in turn
        h.publish("task:completed", {"taskId": f"t-{len(h.submitted)}"})
    depths = [s["chain_depth"] for s, _, _ in h.submitted]
    assert depths == [1, 2, 3]
    throttled = h.topics("automation:throttled")
    assert throttled and "chain depth 3" in throttled[0]["reason"]


def test_events_emitted_from_inside_a_task_count_as_that_tasks_depth(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("on-deploy", {"type": "event", "topic": "deployment:*"})])
    h.depths["t-deep"] = 3
    h.engine.startService()
    h.publish("deployment:done", source="task:t-deep")
    assert h.submitted == [] and h.topics("automation:throttled")[0]["depth"] == 3
    h.publish("deployment:done", source="client")
    assert len(h.submitted) == 1


def test_engine_events_and_output_chunks_never_trigger_wildcard_rules(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("all", {"type": "event", "topic": "*"}, max_fires_per_minute=100),
                           rule("out", {"type": "event", "topic": "task:output"}, max_fires_per_minute=100)])
    h.engine.startService()
    h.publish("automation:fired", {"ruleId": "x"})
    h.publish("automation:throttled", {"ruleId": "x"})
    assert h.submitted == []
    h.publish("task:output", {"taskId": "t-0", "chunk": "hi"})
    assert [s for _, s, _ in h.submitted] == ["rule:out"]


def test_enable_disable_globally_and_per_rule_persists(tmp_path: Path) -> None:
    rules = [rule("a", {"type": "event", "topic": "go"}), rule("b", {"type": "event", "topic": "go"})]
    h = Harness(tmp_path, rules)
    h.engine.startService()
    assert h.engine.set_enabled(False) == {"enabled": False}
    h.publish("go")
    assert h.submitted == []
    h.engine.set_enabled(True)
    assert h.engine.set_enabled(False, "a") == {"success": True, "ruleId": "a", "enabled": False}
    h.publish("go")
    assert [s for _, s, _ in h.submitted] == ["rule:b"]
    assert json.loads(h.state_file.read_text()) == {"enabled": True, "rules": {"a": False}}
    with pytest.raises(InvalidParams, match="Unknown rule: nope"):
        h.engine.set_enabled(True, "nope")
    h.engine.stopService()
    again = h.make_engine()  # a restart reads the saved state
    again.startService()
    status = {r["id"]: r for r in again.status()["rules"]}
    assert status["a"]["enabled"] is False and status["a"]["enabledBy"] == "override"
    assert status["b"]["enabled"] is True and status["b"]["enabledBy"] == "config"


def test_disabling_drops_pending_debounced_activity(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("d", {"type": "file_change", "pattern": "**"}, condition={"type": "debounce", "interval_ms": 1000})])
    h.engine.startService()
    h.files("src/a.ts")
    h.engine.set_enabled(False, "d")
    h.clock.advance(5)
    assert h.submitted == []


def test_schedule_rules_fire_from_their_cron(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("nightly", {"type": "schedule", "cron": "0 * * * *"}, "hourly {event.topic}")],
                schedule={"timezone": "UTC"})
    h.engine.startService()
    nxt = h.engine.status()["rules"][0]["nextFire"]
    assert nxt is not None
    h.clock.advance(3600)
    assert [s[0]["prompt"] for s in h.submitted] == ["hourly schedule:fired"]
    assert h.topics("schedule:fired")[0]["rule"] == "nightly"
    entries = h.engine.schedule_entries()
    assert entries[0]["name"] == "rule:nightly" and entries[0]["fires"] == 1


def test_a_failing_submit_is_recorded_not_raised(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("r", {"type": "event", "topic": "go"})])

    def refuse(spec: dict, source: str, metadata: dict) -> Any:
        raise RuntimeError("Supervisor is shutting down")

    h.engine._submit = refuse
    h.engine.startService()
    h.publish("go")
    status = h.engine.status()["rules"][0]
    assert status["lastError"] == "Supervisor is shutting down" and status["fireCount"] == 0
    assert h.topics("automation:error")[0]["ruleId"] == "r"


def test_env_names_only_in_status_and_passed_to_submit(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("r", {"type": "event", "topic": "go"}, action={"env": {"TOKEN": "${SECRET_TOKEN}"}})])
    h.engine.startService()
    h.publish("go")
    assert h.submitted[0][0]["env"] == {"TOKEN": "${SECRET_TOKEN}"}  # expanded when the task starts
    assert h.engine.status()["rules"][0]["action"]["env"] == ["TOKEN"]


def test_reload_keeps_counters_and_applies_new_rules(tmp_path: Path) -> None:
    h = Harness(tmp_path, [rule("r", {"type": "event", "topic": "go"})])
    h.engine.startService()
    h.publish("go")
    h.engine.apply_config(validate({"rules": [rule("r", {"type": "event", "topic": "stop"}),
                                              rule("new", {"type": "event", "topic": "go"})]}, "test"))
    h.publish("go")
    assert [s for _, s, _ in h.submitted] == ["rule:r", "rule:new"]
    assert {r["id"]: r["fireCount"] for r in h.engine.status()["rules"]} == {"r": 1, "new": 1}


class Commands:
    """The command runner, held by the test: each run waits until the test answers it."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, Any]] = []

    def __call__(self, line: str, timeout: float) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred = Deferred()
        self.runs.append((line, timeout, d))
        return d

    def answer(self, index: int, exit_code: int | None, error: str | None = None) -> None:
        from aiwg.daemon.tasks.commands import CommandResult

        self.runs[index][2].callback(CommandResult(exit_code=exit_code, output="", duration=0.1, error=error))


def command_harness(tmp_path: Path, expect: str | None = None) -> tuple[Harness, Commands]:
    commands = Commands()
    condition = {"type": "command", "run": "npm test", "timeout_seconds": 60}
    if expect:
        condition["expect"] = expect
    h = Harness(tmp_path, [rule("fix", {"type": "file_change", "pattern": "src/**"}, "Fix:\n{files}",
                                condition=condition, action={"until": "npm test", "max_iterations": 3})])
    h.engine = AutomationEngine(reactor=h.clock, bus=h.bus, config=h.config, submit=h.submit,
                                task_depth=lambda tid: h.depths.get(tid), state_file=h.state_file,
                                run_command=commands)
    h.engine.startService()
    return h, commands


def test_a_command_condition_fires_only_on_the_expected_outcome(tmp_path: Path) -> None:
    h, commands = command_harness(tmp_path, expect="failure")
    h.files("src/a.py")
    assert [(line, timeout) for line, timeout, _ in commands.runs] == [("npm test", 60.0)]
    assert h.submitted == []  # not before the command has answered
    commands.answer(0, 0)  # the tests pass: nothing to fix
    h.clock.advance(0)  # deliver the events
    assert h.submitted == []
    [skipped] = h.topics("automation:skipped")
    assert skipped["reason"] == "`npm test` exited 0; the rule fires on failure"
    h.files("src/b.py")
    commands.answer(1, 1)  # now they fail
    [(spec, source, metadata)] = h.submitted
    assert spec["prompt"] == "Fix:\nsrc/b.py" and source == "rule:fix"
    assert spec["until"] == "npm test" and spec["max_iterations"] == 3  # the action's loop goes along
    status = h.engine.status()["rules"][0]
    assert status["skippedCount"] == 1 and status["condition"]["lastCheck"]["exitCode"] == 1
    assert status["action"]["loop"]["until"] == "npm test"


def test_triggers_during_a_run_are_gathered_for_one_more_run(tmp_path: Path) -> None:
    h, commands = command_harness(tmp_path)  # expect success (the default)
    h.files("src/a.py")
    h.files("src/b.py")
    h.files("src/c.py", "src/b.py")
    assert len(commands.runs) == 1  # one at a time
    commands.answer(0, 0)
    assert [s["prompt"] for s, _, _ in h.submitted] == ["Fix:\nsrc/a.py"]
    assert len(commands.runs) == 2  # the gathered triggers get their own run
    commands.answer(1, 0)
    assert [s["prompt"] for s, _, _ in h.submitted] == ["Fix:\nsrc/a.py", "Fix:\nsrc/b.py\nsrc/c.py"]


def test_a_command_that_does_not_finish_decides_nothing(tmp_path: Path) -> None:
    for expect in ("success", "failure"):
        h, commands = command_harness(tmp_path, expect=expect)
        h.files("src/a.py")
        commands.answer(0, None, error="timed out after 60s")
        h.clock.advance(0)
        assert h.submitted == []
        assert h.topics("automation:skipped")[0]["reason"] == (
            "the condition `npm test` did not finish: timed out after 60s")
        h.engine.stopService()


def test_a_disabled_or_reloaded_rule_ignores_a_late_answer(tmp_path: Path) -> None:
    h, commands = command_harness(tmp_path, expect="failure")
    h.files("src/a.py")
    h.engine.set_enabled(False, "fix")
    commands.answer(0, 1)
    assert h.submitted == []


def test_a_loop_rule_starts_no_second_loop_while_its_last_one_runs(tmp_path: Path) -> None:
    states: dict[str, str] = {}
    h = Harness(tmp_path, [rule("fix", {"type": "file_change", "pattern": "src/**"}, "Fix it",
                                action={"until": "make test"}),
                           rule("plain", {"type": "file_change", "pattern": "src/**"}, "Note it")])
    h.engine = AutomationEngine(reactor=h.clock, bus=h.bus, config=h.config, submit=h.submit,
                                task_depth=lambda tid: h.depths.get(tid), state_file=h.state_file,
                                task_state=states.get)
    h.engine.startService()
    h.files("src/a.py")
    assert [source for _, source, _ in h.submitted] == ["rule:fix", "rule:plain"]
    states["t-1"] = "running"  # the loop edits src/ as it works
    h.files("src/a.py")
    assert [source for _, source, _ in h.submitted] == ["rule:fix", "rule:plain", "rule:plain"]
    assert h.topics("automation:skipped")[-1]["reason"] == "its loop t-1 is still running"
    states["t-1"] = "failed"
    h.files("src/a.py")
    assert [source for _, source, _ in h.submitted][-2:] == ["rule:fix", "rule:plain"]


def test_after_a_restart_the_loop_a_rule_started_is_found_in_the_store(tmp_path: Path) -> None:
    states = {"t-old": "running"}
    asked: list[str] = []
    h = Harness(tmp_path, [rule("fix", {"type": "file_change", "pattern": "src/**"}, "Fix it",
                                action={"until": "make test"})])
    h.engine = AutomationEngine(reactor=h.clock, bus=h.bus, config=h.config, submit=h.submit,
                                task_depth=lambda tid: h.depths.get(tid), state_file=h.state_file,
                                task_state=states.get, unfinished_loop=lambda source: asked.append(source) or "t-old")
    h.engine.startService()
    h.files("src/a.py")
    h.files("src/b.py")
    assert h.submitted == [] and asked == ["rule:fix"]  # asked once, not at every trigger
    assert h.topics("automation:skipped")[-1]["reason"] == "its loop t-old is still running"
    states["t-old"] = "completed"
    h.files("src/c.py")
    assert [s["prompt"] for s, _, _ in h.submitted] == ["Fix it"]
    assert h.engine.status()["rules"][0]["skippedCount"] == 2


def test_a_reload_while_the_command_runs_hands_its_triggers_to_the_new_rule(tmp_path: Path) -> None:
    h, commands = command_harness(tmp_path, expect="failure")
    h.files("src/a.py")
    h.engine.apply_config(validate({"rules": [rule(
        "fix", {"type": "file_change", "pattern": "src/**"}, "Fix v2:\n{files}",
        condition={"type": "command", "run": "npm run test:all"})]}, "test"))
    h.files("src/b.py")  # the new rule waits for the running command too
    assert len(commands.runs) == 1
    commands.answer(0, 1)  # answered for the old rule: the new one checks everything again
    assert [line for line, _, _ in commands.runs] == ["npm test", "npm run test:all"]
    commands.answer(1, 0)
    assert [s["prompt"] for s, _, _ in h.submitted] == ["Fix v2:\nsrc/a.py\nsrc/b.py"]


def test_the_loop_guard_fails_closed_when_it_cannot_look(tmp_path: Path) -> None:
    """A guard whose own lookup breaks refuses the firing (and says why) instead of
    letting a second loop, or a chain of unknown depth, through."""
    def broken_state(task_id: str) -> str:
        raise RuntimeError("store gone")

    def broken_depth(task_id: str) -> int:
        raise RuntimeError("store gone")

    h = Harness(tmp_path, [rule("fix", {"type": "file_change", "pattern": "src/**"}, "Fix it",
                                action={"until": "make test"}),
                           rule("on-done", {"type": "event", "topic": "task:completed"}, "Next")])
    h.engine = AutomationEngine(reactor=h.clock, bus=h.bus, config=h.config, submit=h.submit,
                                task_depth=broken_depth, state_file=h.state_file, task_state=broken_state)
    h.engine.startService()
    h.files("src/a.py")
    assert [source for _, source, _ in h.submitted] == ["rule:fix"]  # no earlier loop: it fires
    h.files("src/b.py")  # its loop's state cannot be read: no second loop
    assert [source for _, source, _ in h.submitted] == ["rule:fix"]
    assert "cannot tell whether its loop" in h.topics("automation:skipped")[-1]["reason"]
    h.bus.publish("task:completed", {"taskId": "t-unknown"})
    h.clock.advance(0)
    h.clock.advance(0)
    assert [source for _, source, _ in h.submitted] == ["rule:fix"]  # chain depth unknown: at the limit
