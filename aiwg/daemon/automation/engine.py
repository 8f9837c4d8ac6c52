# tests: tests/daemon/test_automation.py, tests/e2e/test_automation.py
"""The rules engine: events in, tasks out, never in a feedback loop.

Triggers come from the event bus (`file:changed` for `file_change` rules, any
topic for `event` rules) and from one CronTimer per `schedule` rule. A
`debounce` condition holds a rule's matching activity until it has been quiet
for the interval, then fires once with every file gathered; `always` fires at
once; `command` runs its command line (spawned, never on the reactor's time,
with a timeout) and fires only if the outcome is the expected one — one run at
a time per rule, with what triggers it meanwhile gathered for the next run. A
rule whose action is a loop starts no new loop while its last one has not ended. Before a rule fires the loop guard checks its rate (fires per minute)
and the chain depth: a task a rule submits records its depth, and the events
of that task (their payload names it) are one level deeper.

Enable/disable, globally and per rule, is written to
`.aiwg/daemon/automation.json` and survives restarts and reloads.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

from aiwg.core import cron
from aiwg.core.config import Config
from aiwg.core.events import Event
from aiwg.core.rules import LoopGuard, Rule, render_prompt, rules_from_config
from aiwg.core.watching import changes_from_payload, matching_paths
from aiwg.daemon.automation.crontimer import CronTimer
from aiwg.daemon.debounce import Debouncer
from aiwg.core.timefmt import iso_utc
from aiwg.daemon.statefile import read_json, write_json_atomic
from aiwg.errors import InvalidParams

#: Files listed in a task's metadata (the prompt's {files} has them all).
MAX_FILES_IN_METADATA = 100
#: Tasks whose chain depth is remembered without a store lookup.
DEPTH_CACHE = 4096

Submit = Callable[..., Any]  # submit(spec: dict, source: str, metadata: dict) -> task
#: run_command(line, timeout_seconds) -> Deferred[CommandResult]
RunCommand = Callable[[str, float], Any]


class RuleState:
    """What the engine knows about one rule at run time."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.fires = 0
        self.throttled = 0
        self.last_fired: float | None = None
        self.last_error: str | None = None
        self.last_task: str | None = None
        self.debouncer: Debouncer | None = None
        self.timer: CronTimer | None = None
        self.checking = False  # its `command` condition is running
        self.gathered: list[tuple[list[str], Event, int]] = []  # triggers meanwhile
        self.last_check: dict[str, Any] | None = None
        self.skipped = 0
        self.looked_up = False  # whether the store was asked for this rule's unfinished loop


class AutomationEngine(Service):
    name = "automation"
    log = Logger()

    def __init__(self, *, reactor: Any, bus: Any, config: Config, submit: Submit,
                 task_depth: Callable[[str], int | None], state_file: Path,
                 run_command: RunCommand | None = None,
                 task_state: Callable[[str], str | None] | None = None,
                 unfinished_loop: Callable[[str], str | None] | None = None) -> None:
        self._reactor = reactor
        self._run_command = run_command
        self._task_state = task_state
        self._unfinished_loop = unfinished_loop
        self._bus = bus
        self._submit = submit
        self._task_depth_lookup = task_depth
        self._state_file = Path(state_file)
        self._config = config
        self._subscription: Any = None
        self.rules: OrderedDict[str, RuleState] = OrderedDict()
        self.globally_enabled = True
        self.overrides: dict[str, bool] = {}
        self.guard = LoopGuard()
        self._depths: OrderedDict[str, int] = OrderedDict()
        self._pushes = itertools.count()
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self._load_toggles()

    # -- lifecycle -----------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._build(self._config)
        self._subscription = self._bus.subscribe(["*"], self._on_event)
        if self.rules:
            self.log.info(
                "automation engine loaded {count} rule(s){state}",
                count=len(self.rules),
                state="" if self.globally_enabled else " (automation is disabled: aiwg automation enable)",
            )

    def stopService(self) -> None:
        Service.stopService(self)
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self._teardown()

    def _build(self, config: Config) -> None:
        section = config.data["automation"]
        self.guard.max_per_minute = int(section["max_fires_per_minute"])
        self.guard.max_depth = int(section["max_chain_depth"])
        previous = self.rules
        self.rules = OrderedDict()
        for rule in rules_from_config(config.data["rules"]):
            state = RuleState(rule)
            old = previous.get(rule.id)
            if old is not None:  # keep counters across a reload
                state.fires, state.throttled = old.fires, old.throttled
                state.last_fired, state.last_error, state.last_task = old.last_fired, old.last_error, old.last_task
                state.skipped, state.last_check = old.skipped, old.last_check
                state.looked_up = old.looked_up
                # A command still running for the old rule answers for the new one.
                state.checking, state.gathered = old.checking, old.gathered
            self.rules[rule.id] = state
        self._arm_schedules(config)

    def _arm_schedules(self, config: Config) -> None:
        for state in self.rules.values():
            if state.rule.trigger_type == "schedule" and self.is_enabled(state.rule.id):
                self._arm_schedule(state)

    def _teardown(self) -> None:
        for state in self.rules.values():
            self._quiet(state)

    def _quiet(self, state: RuleState) -> None:
        if state.timer is not None:
            state.timer.stop()
            state.timer = None
        if state.debouncer is not None:
            state.debouncer.stop()
            state.debouncer = None

    # -- enable / disable ------------------------------------------------------

    def is_enabled(self, rule_id: str) -> bool:
        state = self.rules.get(rule_id)
        if state is None:
            return False
        return self.overrides.get(rule_id, state.rule.enabled)

    def set_enabled(self, enabled: bool, rule_id: str | None = None) -> dict[str, Any]:
        if rule_id is None:
            self.globally_enabled = enabled
            if not enabled:
                for state in self.rules.values():
                    if state.debouncer is not None:
                        state.debouncer.stop()
                        state.debouncer = None
            self._save_toggles()
            self.log.info("automation {what} globally", what="enabled" if enabled else "disabled")
            self._bus.publish("automation:toggled", {"enabled": enabled})
            return {"enabled": enabled}
        state = self.rules.get(rule_id)
        if state is None:
            known = ", ".join(self.rules) or "no rules are configured"
            raise InvalidParams(f"Unknown rule: {rule_id} (parameter 'ruleId'; known: {known})", {"ruleId": rule_id})
        self.overrides[rule_id] = enabled
        self._save_toggles()
        self._quiet(state)
        if enabled and state.rule.trigger_type == "schedule" and self.running:
            self._arm_schedule(state)
        self.log.info("automation rule {id} {what}", id=rule_id, what="enabled" if enabled else "disabled")
        self._bus.publish("automation:toggled", {"ruleId": rule_id, "enabled": enabled})
        return {"success": True, "ruleId": rule_id, "enabled": enabled}

    def _arm_schedule(self, state: RuleState) -> None:
        """One CronTimer for a schedule-triggered rule, in schedule.timezone."""
        schedule = self._config.data["schedule"]
        state.timer = CronTimer(
            reactor=self._reactor, name=f"rule {state.rule.id}", expression=state.rule.cron or "",
            zone=cron.zone(schedule.get("timezone")),
            grace=float(schedule.get("misfire_grace_seconds", cron.DEFAULT_MISFIRE_GRACE_SECONDS)),
            on_fire=lambda scheduled, now: self._cron_fired(state, scheduled),
        )
        state.timer.start()

    def _load_toggles(self) -> None:
        saved = read_json(self._state_file, "automation", self.log)
        if isinstance(saved, dict):
            self.globally_enabled = saved.get("enabled", True) is not False
            rules = saved.get("rules")
            if isinstance(rules, dict):
                self.overrides = {str(k): bool(v) for k, v in rules.items() if isinstance(v, bool)}

    def _save_toggles(self) -> None:
        try:
            write_json_atomic(self._state_file, {"enabled": self.globally_enabled, "rules": self.overrides})
        except OSError as exc:
            self.log.error("automation: could not save {path}: {error}", path=str(self._state_file), error=str(exc))

    # -- triggers ----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if not self.globally_enabled or event.topic.startswith("automation:"):
            return  # the engine's own events never trigger rules: no loop through them
        depth: int | None = None
        files_changed = event.topic == "file:changed"
        changes = changes_from_payload(event.payload) if files_changed else []
        for state in self.rules.values():
            rule = state.rule
            if not self.is_enabled(rule.id):
                continue
            if rule.trigger_type == "file_change" and files_changed:
                files = matching_paths(rule.matches_file, changes)
                if files:
                    self._triggered(state, files, event, 0)
            elif rule.trigger_type == "event" and self._topic_fires(rule, event.topic):
                if depth is None:
                    depth = self._event_depth(event)
                self._triggered(state, [], event, depth)

    @staticmethod
    def _topic_fires(rule: Rule, topic: str) -> bool:
        if topic == "task:output":  # a stream of chunks, not a state change
            return rule.topic == "task:output"
        return rule.matches_event(topic)

    def _cron_fired(self, state: RuleState, scheduled: float) -> None:
        event = self._bus.publish("schedule:fired", {
            "job": f"rule:{state.rule.id}", "rule": state.rule.id, "cron": state.rule.cron,
            "scheduled": iso_utc(scheduled),
        }, source="schedule")
        if self.globally_enabled and self.is_enabled(state.rule.id):
            self._triggered(state, [], event, 0)

    def _triggered(self, state: RuleState, files: list[str], event: Event, depth: int) -> None:
        rule = state.rule
        if rule.condition == "debounce" and rule.debounce_ms > 0:
            if state.debouncer is None:
                state.debouncer = Debouncer(
                    reactor=self._reactor, wait=rule.debounce_ms / 1000.0,
                    function=lambda batch, state=state: self._settled(state, batch),
                )
            state.debouncer.push((files, event, depth), key=next(self._pushes))
            return
        if rule.condition == "command":
            self._check(state, files, event, depth)
            return
        self._fire(state, files, event, depth)

    def _check(self, state: RuleState, files: list[str], event: Event, depth: int) -> None:
        """Run the rule's `command` condition; fire if its outcome is the expected one."""
        if state.checking:
            state.gathered.append((files, event, depth))
            return
        busy = self._loop_busy(state)
        if busy:
            self._skip(state, event, busy, quiet=True)
            return
        rule = state.rule
        if self._run_command is None or rule.command is None:
            self._skip(state, event, "this daemon cannot run a command condition")
            return
        state.checking = True
        try:
            running = self._run_command(rule.command, rule.command_timeout)
        except Exception as exc:
            state.checking = False
            self._skip(state, event, f"could not run `{rule.command}`: {exc}")
            return
        running.addCallback(self._checked, state, files, event, depth)
        running.addErrback(lambda failure: self.log.failure("automation rule {id}: command condition",
                                                            failure, id=rule.id))

    def _checked(self, result: Any, state: RuleState, files: list[str], event: Event, depth: int) -> None:
        state.checking = False
        rule = state.rule
        state.last_check = {"exitCode": result.exit_code, "at": iso_utc(self._reactor.seconds()),
                            "duration": round(result.duration, 3), "error": result.error}
        if not self.running:
            return
        current = self.rules.get(rule.id)
        if current is not state:  # reloaded meanwhile: the new rule checks it all again
            if current is not None and current.checking:
                current.checking = False
                current.last_check = state.last_check
                if current.rule.condition == "command":
                    current.gathered.insert(0, (files, event, depth))
                    self._check_gathered(current)
                else:
                    for paths, gathered_event, gathered_depth in [(files, event, depth), *current.gathered]:
                        self._triggered(current, paths, gathered_event, gathered_depth)
                    current.gathered = []
            return
        if not self.globally_enabled or not self.is_enabled(rule.id):
            state.gathered.clear()
            return
        if result.exit_code is None:
            self._skip(state, event, f"the condition `{rule.command}` did not finish: {result.error}")
        elif rule.condition_met(result.exit_code):
            self.log.info("automation rule {id}: `{command}` exited {code}, as expected ({expect})",
                          id=rule.id, command=rule.command, code=result.exit_code, expect=rule.expect)
            self._fire(state, files, event, depth)
        else:
            self._skip(state, event, f"`{rule.command}` exited {result.exit_code}; the rule fires on "
                                     f"{rule.expect}", quiet=True)
        self._check_gathered(state)

    def _check_gathered(self, state: RuleState) -> None:
        """What came in while the command ran, checked with one more run (against
        the tree as it is now)."""
        if not state.gathered:
            return
        batch, state.gathered = state.gathered, []
        gathered: dict[str, None] = {}
        for paths, _, _ in batch:
            gathered.update(dict.fromkeys(paths))
        self._check(state, list(gathered), batch[-1][1], max(d for _, _, d in batch))

    def _skip(self, state: RuleState, event: Event, reason: str, quiet: bool = False) -> None:
        state.skipped += 1
        if quiet:
            self.log.info("automation rule {id} not fired: {reason}", id=state.rule.id, reason=reason)
        else:
            self.log.warn("automation rule {id} not fired: {reason}", id=state.rule.id, reason=reason)
        self._record(state.rule.id, event, "skipped", reason=reason)
        self._bus.publish("automation:skipped", {"ruleId": state.rule.id, "reason": reason,
                                                 "trigger": event.topic})

    def _settled(self, state: RuleState, batch: list[tuple[list[str], Event, int]]) -> None:
        if not self.globally_enabled or not self.is_enabled(state.rule.id):
            return
        files: dict[str, None] = {}
        for paths, _, _ in batch:
            files.update(dict.fromkeys(paths))
        event = batch[-1][1]
        depth = max(d for _, _, d in batch)
        self._fire(state, list(files), event, depth)

    def _event_depth(self, event: Event) -> int:
        """How many rule firings deep this event is: that of the task it is about
        (its payload's taskId, or a client's `event.emit` from inside a task)."""
        task_id = event.payload.get("taskId") if isinstance(event.payload, dict) else None
        if not isinstance(task_id, str) and event.source.startswith("task:"):
            task_id = event.source[len("task:"):]
        if not isinstance(task_id, str):
            return 0
        if task_id in self._depths:
            return self._depths[task_id]
        try:
            found = self._task_depth_lookup(task_id)
        except Exception:
            # Fail closed: a chain whose depth is unknown is treated as at the limit,
            # so a bug here refuses a firing instead of letting a loop run away.
            self.log.failure("automation: cannot tell how deep task {task_id}'s chain is; treating it as "
                             "at automation.max_chain_depth", task_id=task_id)
            return self.guard.max_depth
        return int(found or 0)

    # -- firing --------------------------------------------------------------------

    def _loop_busy(self, state: RuleState) -> str | None:
        """Why a rule whose action is a loop must not start another: its last loop
        has not ended (the loop's own edits would otherwise queue loop after loop)."""
        if state.rule.loop is None:
            return None
        if state.last_task is None and not state.looked_up and self._unfinished_loop is not None:
            state.looked_up = True  # after a restart: the loop it started may still run
            try:
                state.last_task = self._unfinished_loop(f"rule:{state.rule.id}")
            except Exception as exc:
                self.log.failure("automation: looking up rule {id}'s loop", id=state.rule.id)
                state.looked_up = False  # asked again at the next firing
                return f"cannot tell whether its earlier loop still runs ({type(exc).__name__}: {exc})"
        if state.last_task is None or self._task_state is None:
            return None
        try:
            current = self._task_state(state.last_task)
        except Exception as exc:  # fail closed: no second loop while the first may run
            self.log.failure("automation: looking up the state of task {task_id}", task_id=state.last_task)
            return f"cannot tell whether its loop {state.last_task} still runs ({type(exc).__name__}: {exc})"
        if current in ("awaiting_approval", "queued", "running"):
            return f"its loop {state.last_task} is still {current}"
        return None

    def _fire(self, state: RuleState, files: list[str], event: Event, depth: int) -> None:
        rule = state.rule
        busy = self._loop_busy(state)
        if busy:
            self._skip(state, event, busy, quiet=True)
            return
        now = self._reactor.seconds()
        refusal = self.guard.admit(rule.id, now, depth, rule.max_fires_per_minute)
        if refusal is not None:
            state.throttled += 1
            self.log.warn("automation rule {id} throttled: {reason}", id=rule.id, reason=refusal)
            self._record(rule.id, event, "throttled", reason=refusal)
            self._bus.publish("automation:throttled", {
                "ruleId": rule.id, "reason": refusal, "depth": depth, "trigger": event.topic,
            })
            return
        prompt = render_prompt(rule.prompt, rule_id=rule.id, files=files, topic=event.topic, payload=event.payload)
        spec: dict[str, Any] = {"prompt": prompt, "priority": rule.priority, "retries": rule.retries}
        if rule.require_approval:
            spec["require_approval"] = True
        if rule.isolate is not None:
            spec["isolate"] = rule.isolate
        if rule.base is not None:
            spec["base"] = rule.base
        if rule.executor is not None:
            spec["executor"] = rule.executor
        if rule.timeout_minutes is not None:
            spec["timeout"] = rule.timeout_minutes
        if rule.agent:
            spec["agent"] = rule.agent
        if rule.env:
            spec["env"] = dict(rule.env)
        if rule.loop is not None:
            spec.update(rule.loop.to_config())
        spec["chain_depth"] = depth + 1
        metadata: dict[str, Any] = {"ruleId": rule.id, "trigger": event.topic}
        if files:
            metadata["files"] = files[:MAX_FILES_IN_METADATA]
            metadata["fileCount"] = len(files)
        try:
            task = self._submit(spec, f"rule:{rule.id}", metadata)
        except Exception as exc:
            state.last_error = str(exc) or type(exc).__name__
            self.log.error("automation rule {id} failed to submit its task: {error}", id=rule.id, error=state.last_error)
            self._record(rule.id, event, "error", error=state.last_error)
            self._bus.publish("automation:error", {"ruleId": rule.id, "error": state.last_error})
            return
        state.fires += 1
        state.last_fired = now
        state.last_error = None
        state.last_task = task.id
        self._remember_depth(task.id, depth + 1)
        self.log.info(
            "automation rule {id} fired on {topic}{files} → task {task}",
            id=rule.id, topic=event.topic, task=task.id,
            files=f" ({len(files)} file(s))" if files else "",
        )
        self._record(rule.id, event, "submitted", taskId=task.id)
        self._bus.publish("automation:fired", {
            "ruleId": rule.id, "taskId": task.id, "trigger": event.topic, "depth": depth,
            "files": files[:MAX_FILES_IN_METADATA],
        })

    def _remember_depth(self, task_id: str, depth: int) -> None:
        self._depths[task_id] = depth
        while len(self._depths) > DEPTH_CACHE:
            self._depths.popitem(last=False)

    def _record(self, rule_id: str, event: Event, status: str, **extra: Any) -> None:
        self.recent.append({"ruleId": rule_id, "eventType": event.topic, "status": status,
                            "timestamp": iso_utc(self._reactor.seconds()), **extra})

    # -- reload and status ---------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        relevant = ("rules", "automation", "schedule")
        if all(config.data[k] == self._config.data[k] for k in relevant):
            self._config = config
            return
        self._config = config
        if not self.running:
            return
        self._teardown()
        self._build(config)
        self.log.info("automation engine reloaded {count} rule(s)", count=len(self.rules))

    def status(self) -> dict[str, Any]:
        """AIWG's fields (enabled, ruleCount, rules[], recentExecutions) plus run-time counters."""
        if not self.rules and self.globally_enabled:
            base: dict[str, Any] = {"enabled": True, "ruleCount": 0, "rule_count": 0}
        else:
            base = {"enabled": self.globally_enabled, "ruleCount": len(self.rules), "rule_count": len(self.rules)}
        base["rules"] = [self._rule_status(s) for s in self.rules.values()]
        base["recentExecutions"] = list(self.recent)[-10:]
        base["limits"] = {"max_fires_per_minute": self.guard.max_per_minute,
                          "max_chain_depth": self.guard.max_depth}
        return base

    def _rule_status(self, state: RuleState) -> dict[str, Any]:
        rule = state.rule
        trigger: dict[str, Any] = {"type": rule.trigger_type}
        for key in ("pattern", "cron", "topic"):
            if getattr(rule, key):
                trigger[key] = getattr(rule, key)
        condition: dict[str, Any] = {"type": rule.condition}
        if rule.condition == "debounce":
            condition["interval_ms"] = rule.debounce_ms
        if rule.condition == "command":
            condition.update({"run": rule.command, "expect": rule.expect, "timeout_seconds": rule.command_timeout,
                              "running": state.checking, "lastCheck": state.last_check})
        out: dict[str, Any] = {
            "id": rule.id,
            "description": rule.description,
            "trigger": trigger,
            "condition": condition,
            "action": {"type": "submit_task", "prompt": rule.prompt, "priority": rule.priority,
                       **({"loop": rule.loop.to_json()} if rule.loop is not None else {})},
            "enabled": self.is_enabled(rule.id),
            "enabledBy": "override" if rule.id in self.overrides else "config",
            "cooldownMs": 0,
            "requiresApproval": rule.require_approval,
            "fireCount": state.fires,
            "lastFired": iso_utc(state.last_fired) if state.last_fired else None,
            "lastError": state.last_error,
            "lastTaskId": state.last_task,
            "throttledCount": state.throttled,
            "skippedCount": state.skipped,
            "pending": state.debouncer.pending if state.debouncer is not None else 0,
        }
        if state.timer is not None and state.timer.next_fire:
            out["nextFire"] = iso_utc(state.timer.next_fire)
        if rule.env:
            out["action"]["env"] = sorted(rule.env)  # names only, never values
        return out

    def schedule_entries(self) -> list[dict[str, Any]]:
        """Schedule-triggered rules, for `schedule.list`."""
        out = []
        for state in self.rules.values():
            if state.rule.trigger_type != "schedule":
                continue
            timer = state.timer
            out.append({
                "name": f"rule:{state.rule.id}", "cron": state.rule.cron, "action": "submit_task",
                "enabled": self.globally_enabled and self.is_enabled(state.rule.id),
                "timezone": self._config.data["schedule"].get("timezone") or "local",
                "nextFire": iso_utc(timer.next_fire) if timer and timer.next_fire else None,
                "lastFire": iso_utc(state.last_fired) if state.last_fired else None,
                "fires": state.fires, "skips": timer.skips if timer else 0,
                "lastError": state.last_error, "lastTaskId": state.last_task,
            })
        return out
