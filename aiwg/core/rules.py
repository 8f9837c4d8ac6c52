# tests: tests/core/test_rules.py
"""Automation rules: the model read from `rules`, trigger matching, prompt templates
and the loop guard. Pure: times come in as `now`; nothing here fires anything.

A rule is trigger → condition → action:
- triggers: `file_change {pattern}` (a glob on project-relative paths), `schedule {cron}`,
  `event {topic}` (a topic pattern with `*`);
- conditions: `always`; `debounce {interval_ms}` (trailing: the service fires once
  the rule's matching activity has been quiet that long); `command {run, expect?,
  timeout_seconds?}` (the service runs the command line and fires only when its
  outcome is the expected one: `success`, exit 0, or `failure`);
- action: `submit_task {prompt, priority?, timeout?, env?, retries?, until?, …}`
  (with `until`, the task is a loop: see aiwg.core.loops).

Prompts are templates: `{files}` (the changed paths, one per line), `{event.topic}`,
`{event.payload.<key>}`, `{rule.id}`. Unknown placeholders are left as written.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Iterable, Mapping

from attrs import field, frozen

from aiwg.core.events import topic_matches
from aiwg.core.globs import matches as glob_matches
from aiwg.core.loops import LoopSpec, spec_from_action

DEFAULT_MAX_FIRES_PER_MINUTE = 10
DEFAULT_COMMAND_TIMEOUT_SECONDS = 300.0
DEFAULT_MAX_CHAIN_DEPTH = 3

_PLACEHOLDER = re.compile(r"\{(files|rule\.id|event\.topic|event\.payload\.[A-Za-z0-9_.-]+)\}")


@frozen
class Rule:
    id: str
    trigger_type: str
    pattern: str | None = None
    cron: str | None = None
    topic: str | None = None
    condition: str = "always"
    debounce_ms: int = 0
    prompt: str = ""
    priority: int = 0
    timeout_minutes: float | None = None
    env: Mapping[str, str] = field(factory=dict)
    retries: int = 0
    agent: str | None = None
    require_approval: bool = False
    isolate: bool | None = None  # None: as tasks.isolation says
    base: str | None = None
    executor: str | None = None  # None: executors.default
    max_fires_per_minute: int | None = None
    enabled: bool = True
    description: str = ""
    loop: LoopSpec | None = None
    command: str | None = None  # the `command` condition's command line
    expect: str = "success"  # … and the outcome that lets the rule fire
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS

    def condition_met(self, exit_code: int | None) -> bool:
        """Whether a `command` condition's outcome lets the rule fire; a command
        that did not finish (None) decides nothing."""
        if exit_code is None:
            return False
        return (exit_code == 0) == (self.expect == "success")

    @property
    def trigger_text(self) -> str:
        """The trigger in one short phrase, for status and logs."""
        detail = self.pattern or self.cron or self.topic or ""
        return f"{self.trigger_type} {detail}".strip()

    def matches_file(self, path: str) -> bool:
        return self.trigger_type == "file_change" and self.pattern is not None and glob_matches(self.pattern, path)

    def matches_event(self, topic: str) -> bool:
        return self.trigger_type == "event" and self.topic is not None and topic_matches(self.topic, topic)


def rules_from_config(entries: Iterable[Mapping[str, Any]]) -> tuple[Rule, ...]:
    """Rules from a validated configuration's `rules` list."""
    rules = []
    for entry in entries:
        trigger = entry["trigger"]
        condition = entry.get("condition") or {"type": "always"}
        action = entry["action"]
        rules.append(
            Rule(
                id=entry["id"],
                trigger_type=trigger["type"],
                pattern=trigger.get("pattern"),
                cron=trigger.get("cron"),
                topic=trigger.get("topic"),
                condition=condition["type"],
                debounce_ms=int(condition.get("interval_ms", 0)),
                prompt=action.get("prompt", ""),
                priority=int(action.get("priority", 0)),
                timeout_minutes=action.get("timeout"),
                env=dict(action.get("env") or {}),
                retries=int(action.get("retries", 0)),
                agent=action.get("agent"),
                require_approval=bool(action.get("require_approval", False)),
                isolate=action.get("isolate"),
                base=action.get("base"),
                executor=action.get("executor"),
                max_fires_per_minute=entry.get("max_fires_per_minute"),
                enabled=bool(entry.get("enabled", True)),
                description=entry.get("description", ""),
                loop=spec_from_action(action),
                command=condition.get("run") if condition["type"] == "command" else None,
                expect=condition.get("expect", "success"),
                command_timeout=float(condition.get("timeout_seconds", DEFAULT_COMMAND_TIMEOUT_SECONDS)),
            )
        )
    return tuple(rules)


def render_prompt(
    template: str,
    *,
    rule_id: str,
    files: Iterable[str] = (),
    topic: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> str:
    """Fill a prompt template; unknown or missing placeholders stay as written."""
    file_list = list(files)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "files":
            return "\n".join(file_list) if file_list else match.group(0)
        if name == "rule.id":
            return rule_id
        if name == "event.topic":
            return topic if topic is not None else match.group(0)
        value: Any = payload or {}
        for key in name[len("event.payload.") :].split("."):
            if not isinstance(value, Mapping) or key not in value:
                return match.group(0)
            value = value[key]
        return value if isinstance(value, str) else _text(value)

    return _PLACEHOLDER.sub(replace, template)


def _text(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


class LoopGuard:
    """Keeps a rule that reacts to its own tasks from running away.

    `admit(rule_id, now, depth)` says whether the rule may fire: at most
    `max_per_minute` fires in any 60 s, and never for an event more than
    `max_depth` rule firings deep (the depth is kept in each task's record)."""

    def __init__(
        self,
        max_per_minute: int = DEFAULT_MAX_FIRES_PER_MINUTE,
        max_depth: int = DEFAULT_MAX_CHAIN_DEPTH,
    ) -> None:
        self.max_per_minute = max_per_minute
        self.max_depth = max_depth
        self._fires: dict[str, deque[float]] = {}

    def admit(self, rule_id: str, now: float, depth: int = 0, limit: int | None = None) -> str | None:
        """None if the rule may fire now (and the fire is counted); else why not.
        `limit` overrides `max_per_minute` for this rule."""
        per_minute = self.max_per_minute if limit is None else limit
        if depth >= self.max_depth:
            return f"chain depth {depth} reached the limit of {self.max_depth}"
        fires = self._fires.setdefault(rule_id, deque())
        while fires and (now - fires[0] >= 60 or now < fires[0]):
            fires.popleft()  # older than a minute (or from before a clock step back)
        if len(fires) >= per_minute:
            return f"fired {len(fires)} times in the last minute (limit {per_minute})"
        fires.append(now)
        return None

    def forget(self, rule_id: str) -> None:
        self._fires.pop(rule_id, None)
