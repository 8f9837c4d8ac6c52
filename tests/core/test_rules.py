"""Rules: the model from config, matching, prompt templates, the loop guard."""

from __future__ import annotations

from aiwg.core.config import validate
from aiwg.core.rules import LoopGuard, render_prompt, rules_from_config

GUIDE_RULES = [
    {"id": "auto-test", "trigger": {"type": "file_change", "pattern": "src/**/*.{ts,js}"},
     "condition": {"type": "debounce", "interval_ms": 5000},
     "action": {"type": "submit_task", "prompt": "Run the tests for:\n{files}"}},
    {"id": "security-scan", "trigger": {"type": "file_change", "pattern": "**/.env*"},
     "condition": {"type": "always"},
     "action": {"type": "submit_task", "prompt": "Scan for secrets", "priority": 10}},
    {"id": "on-deploy", "trigger": {"type": "event", "topic": "deployment:*"},
     "action": {"type": "submit_task", "prompt": "Smoke test {event.payload.version} ({event.topic})",
                "env": {"URL": "${DEPLOY_URL}"}}},
]


def test_rules_come_from_a_validated_config() -> None:
    config = validate({"rules": GUIDE_RULES}, "daemon.json")
    auto, scan, deploy = rules_from_config(config.data["rules"])
    assert (auto.condition, auto.debounce_ms) == ("debounce", 5000)
    assert (scan.condition, scan.priority) == ("always", 10)
    assert deploy.condition == "always" and deploy.env == {"URL": "${DEPLOY_URL}"}
    assert auto.matches_file("src/app/main.ts") and not auto.matches_file("test/a.ts")
    assert scan.matches_file("config/.env.production")
    assert deploy.matches_event("deployment:complete") and not deploy.matches_event("task:failed")
    assert not auto.matches_event("deployment:complete")


def test_prompt_templates() -> None:
    assert render_prompt("Run the tests for:\n{files}", rule_id="r", files=["src/a.ts", "src/b.ts"]) == \
        "Run the tests for:\nsrc/a.ts\nsrc/b.ts"
    text = render_prompt("Smoke {event.payload.version} on {event.payload.env.name} ({event.topic}, {rule.id})",
                         rule_id="on-deploy", topic="deployment:complete",
                         payload={"version": "1.2.3", "env": {"name": "prod"}})
    assert text == "Smoke 1.2.3 on prod (deployment:complete, on-deploy)"
    assert render_prompt("{event.payload.missing} {unknown} {files}", rule_id="r") == \
        "{event.payload.missing} {unknown} {files}"
    assert render_prompt("n={event.payload.n}", rule_id="r", payload={"n": 3}) == "n=3"


def test_loop_guard_rate_limit_is_a_sliding_minute() -> None:
    guard = LoopGuard(max_per_minute=3)
    assert [guard.admit("r", t) for t in (0, 1, 2)] == [None, None, None]
    assert "3 times in the last minute" in guard.admit("r", 30)
    assert guard.admit("other", 30) is None  # per rule
    assert guard.admit("r", 60) is None  # the fire at 0 has left the window
    assert guard.admit("r", 60.5) is not None


def test_loop_guard_chain_depth() -> None:
    guard = LoopGuard(max_depth=3)
    assert guard.admit("r", 0, depth=2) is None
    assert "chain depth 3" in guard.admit("r", 1, depth=3)


def test_loop_guard_survives_a_clock_step_back() -> None:
    guard = LoopGuard(max_per_minute=2)
    guard.admit("r", 1000)
    guard.admit("r", 1001)
    assert guard.admit("r", 10) is None  # the clock went back: old fires no longer count
