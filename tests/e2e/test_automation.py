"""Automation end to end: the real daemon, real watchdog and the fake claude on a temp project.

File changes, custom events and cron jobs go in; tasks (or nothing) come out. Waits
are bounded polls; where a test shows that nothing happens it watches for a quiet
period a little longer than the debounce (`holds`), after a positive control has
shown that the watcher is alive.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from aiwg.daemon.watch.watcher import POLL_INTERVAL
from aiwg.errors import INVALID_PARAMS, RpcError
from tests.conftest import Project, wait_for

pytestmark = pytest.mark.e2e

FAST = {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}
DEBOUNCE_MS = 200
WATCH = {"enabled": True, "debounce_ms": DEBOUNCE_MS, "ignore": ["node_modules/", "*.log"]}
#: How long "nothing happens" is watched for: the watcher's debounce plus scheduling slack.
QUIET = DEBOUNCE_MS / 1000 + 0.8


# -- helpers -------------------------------------------------------------------


def configure(project: Project, *, rules: Iterable[dict[str, Any]] = (),
              watch: dict[str, Any] | None = None, **sections: Any) -> None:
    daemon = {**FAST, **sections.pop("daemon", {})}
    config: dict[str, Any] = {"daemon": daemon, "rules": list(rules), **sections}
    if watch is not None:
        config["watch"] = watch
    project.write_config(json.dumps(config))


def file_rule(rule_id: str, pattern: str, prompt: str = "{rule.id}: review\n{files}",
              **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "trigger": {"type": "file_change", "pattern": pattern},
            "action": {"type": "submit_task", "prompt": prompt}, **extra}


def event_rule(rule_id: str, topic: str, prompt: str, **action: Any) -> dict[str, Any]:
    return {"id": rule_id, "trigger": {"type": "event", "topic": topic},
            "action": {"type": "submit_task", "prompt": prompt, **action}}


def call(project: Project, method: str, **params: Any) -> Any:
    with project.client() as client:
        return client.call(method, **params)


def start(project: Project) -> int:
    """Start the daemon; when it watches files, return once the observer is running
    (`aiwg daemon start` returns before watchdog has set its watches up)."""
    pid = project.start()
    if json.loads(project.paths.config_file.read_text()).get("watch", {}).get("enabled"):
        wait_for(lambda: subsystem(project, "file_watcher").get("running"))
    return pid


def subsystem(project: Project, name: str) -> dict[str, Any]:
    return call(project, "daemon.status")["subsystems"][name]


def restart(project: Project) -> int:
    project.aiwg("daemon", "stop", check=True)
    return start(project)


def write(project: Project, *paths: str, text: str = "changed\n") -> None:
    for relative in paths:
        path = project.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tasks(project: Project, source: str | None = None) -> list[dict[str, Any]]:
    """Tasks (oldest first), only those from `source` if given (`rule:<id>`, `schedule:<job>`)."""
    found = call(project, "task.list", limit=1000)
    return [t for t in reversed(found) if source is None or t["source"] == source]


def rule_tasks(project: Project, rule_id: str | None = None) -> list[dict[str, Any]]:
    return [t for t in tasks(project)
            if (t["source"] == f"rule:{rule_id}" if rule_id else t["source"].startswith("rule:"))]


def wait_rule_tasks(project: Project, rule_id: str, count: int = 1,
                    timeout: float = 10) -> list[dict[str, Any]]:
    return wait_for(lambda: len(found := rule_tasks(project, rule_id)) >= count and found,
                    timeout=timeout)


def wait_finished(project: Project, task_id: str, timeout: float = 20) -> dict[str, Any]:
    finished = ("completed", "failed", "timeout", "cancelled")
    return wait_for(
        lambda: (t := call(project, "task.get", taskId=task_id))["state"] in finished and t,
        timeout=timeout)


def recent(project: Project, topic: str) -> list[dict[str, Any]]:
    return call(project, "events.recent", topic=topic, limit=1000)


def file_events(project: Project) -> list[dict[str, Any]]:
    return [e["payload"] for e in recent(project, "file:changed")]


def wait_file_event(project: Project, path: str, timeout: float = 10) -> dict[str, Any]:
    """The `file:changed` payload that lists `path` (proof the watcher saw it)."""
    return wait_for(lambda: next((p for p in file_events(project) if path in p["paths"]), None),
                    timeout=timeout)


def quiet_for(polling: bool) -> float:
    """A quiet period long enough for the watcher to have seen a change: two scans when polling."""
    return QUIET + 2 * POLL_INTERVAL if polling else QUIET


def holds(predicate: Callable[[], Any], seconds: float = QUIET, interval: float = 0.05) -> None:
    """Fail as soon as `predicate` stops being true during the next `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        assert value, f"stopped holding: {predicate}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def file_lines(task: dict[str, Any], header: str) -> list[str]:
    """The file list a `{header}\\n{files}` prompt was rendered with."""
    first, *rest = task["prompt"].split("\n")
    assert first == header, task["prompt"]
    return rest


def agent_prompt(run: dict[str, Any]) -> str:
    argv = run["argv"]
    assert argv[-2] == "--", argv  # the prompt comes last, after every option
    return argv[-1]


def rule_status(project: Project, rule_id: str) -> dict[str, Any]:
    return next(r for r in call(project, "automation.status")["rules"] if r["id"] == rule_id)


# -- file changes --------------------------------------------------------------


BACKENDS = pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])


@BACKENDS
def test_a_burst_of_twenty_writes_fires_one_task_listing_every_file(
    project: Project, polling: bool,
) -> None:
    # Polling: a debounce longer than the scan interval, so a burst split by a scan is still one.
    debounce_ms = int(POLL_INTERVAL * 1000) + 500 if polling else DEBOUNCE_MS
    configure(project, watch={**WATCH, "use_polling": polling, "debounce_ms": debounce_ms},
              rules=[file_rule("ts-review", "src/**/*.ts")])
    for folder in ("src", "src/app", "src/lib/util"):
        (project.root / folder).mkdir(parents=True)
    start(project)
    burst = ([f"src/app/view{i:02}.ts" for i in range(8)]
             + [f"src/lib/util/h{i:02}.ts" for i in range(8)]
             + [f"src/main{i}.ts" for i in range(4)])
    assert len(burst) == 20
    write(project, *burst)

    [task] = wait_rule_tasks(project, "ts-review", timeout=10 + 2 * POLL_INTERVAL)
    holds(lambda: len(rule_tasks(project)) == 1)  # one burst, one task
    assert sorted(file_lines(task, "ts-review: review")) == sorted(burst)
    metadata = task["metadata"]
    assert metadata["ruleId"] == "ts-review" and metadata["trigger"] == "file:changed"
    assert metadata["chainDepth"] == 1 and sorted(metadata["files"]) == sorted(burst)

    record = wait_finished(project, task["id"])
    assert record["state"] == "completed"
    [run] = project.fake.runs()
    assert agent_prompt(run) == task["prompt"]
    assert sorted(agent_prompt(run).split("\n")[1:]) == sorted(burst)

    [event] = file_events(project)
    assert event["count"] == 20 and event["truncated"] is False
    assert sorted(event["paths"]) == sorted(burst)
    assert {c["kind"] for c in event["changes"]} == {"created"}


def test_a_file_name_that_is_not_utf8_fires_its_rule_and_the_next_change_too(project: Project) -> None:
    """Its stray bytes come from the OS as surrogates, which no UTF-8 file or row can
    hold: the daemon names the file `bad\\xff.txt` everywhere and goes on."""
    configure(project, watch=WATCH, rules=[file_rule("any", "src/**")])
    (project.root / "src").mkdir()
    start(project)
    (project.root / "src").joinpath(b"bad\xff\xfe.txt".decode("utf-8", "surrogateescape")).write_text("x")
    [task] = wait_rule_tasks(project, "any")
    assert file_lines(task, "any: review") == ["src/bad\\xff\\xfe.txt"]
    assert wait_finished(project, task["id"])["state"] == "completed"
    write(project, "src/next.txt")
    [_, second] = wait_rule_tasks(project, "any", count=2)
    assert file_lines(second, "any: review") == ["src/next.txt"]
    assert wait_finished(project, second["id"])["state"] == "completed"


def test_ignored_and_non_matching_paths_fire_nothing(project: Project) -> None:
    configure(project, watch=WATCH, rules=[
        file_rule("ts", "src/**/*.ts"),
        file_rule("logs", "**/*.log"),            # would match, but *.log is ignored
        file_rule("modules", "**/node_modules/**"),  # would match, but node_modules/ is ignored
    ])
    (project.root / "src").mkdir()
    (project.root / "node_modules" / "pkg").mkdir(parents=True)  # there at start: not watched
    start(project)
    write(project,
          "node_modules/pkg/index.ts",
          "node_modules/.bin/tool.log",
          "src/node_modules/dep/index.ts",  # a tree created while watching
          "build.log",
          "src/app/debug.log")
    holds(lambda: not file_events(project) and not rule_tasks(project))

    write(project, "docs/x.md", "README.txt")  # watched, matching no rule
    event = wait_file_event(project, "docs/x.md")
    assert sorted(event["paths"]) == ["README.txt", "docs/x.md"]  # none of the ignored ones
    holds(lambda: not rule_tasks(project))
    assert subsystem(project, "file_watcher")["changes_published"] == 1


@BACKENDS
def test_the_daemons_own_directory_never_fires_even_for_a_match_everything_rule(
    project: Project, polling: bool,
) -> None:
    # The heartbeat rewrites .aiwg/daemon/heartbeat and state.json every second here (its minimum).
    configure(project, watch={**WATCH, "use_polling": polling},
              daemon={"heartbeat_interval_seconds": 1},
              rules=[file_rule("everything", "**", prompt="seen:\n{files}")])
    start(project)
    write(project, ".aiwg/daemon/scratch.txt", ".aiwg/daemon/sub/x.ts",
          ".aiwg/daemon/actions/fake.log.txt")
    holds(lambda: not file_events(project) and not rule_tasks(project), quiet_for(polling))

    write(project, "notes.txt")  # the positive control: the watcher is alive
    [task] = wait_rule_tasks(project, "everything", timeout=10 + 2 * POLL_INTERVAL)
    assert file_lines(task, "seen:") == ["notes.txt"]
    # The task's own output file and the task store (both under .aiwg/daemon/) fire nothing either.
    assert wait_finished(project, task["id"])["state"] == "completed"
    holds(lambda: len(rule_tasks(project)) == 1, quiet_for(polling))
    assert all(not p.startswith(".aiwg/daemon/") for e in file_events(project) for p in e["paths"])


# -- enable / disable ----------------------------------------------------------


def test_disabling_automation_globally_stops_rules_until_enabled(project: Project) -> None:
    configure(project, watch=WATCH, rules=[file_rule("ts", "src/**/*.ts")])
    (project.root / "src").mkdir()
    start(project)
    off = project.aiwg("automation", "disable", check=True)
    assert off.stdout.strip() == "automation disabled"
    status = json.loads(project.aiwg("automation", "status", "--json", check=True).stdout)
    assert status["enabled"] is False

    write(project, "src/while_off.ts")
    wait_file_event(project, "src/while_off.ts")
    holds(lambda: not rule_tasks(project))

    assert project.aiwg("automation", "enable", check=True).stdout.strip() == "automation enabled"
    write(project, "src/while_on.ts")
    [task] = wait_rule_tasks(project, "ts")
    assert file_lines(task, "ts: review") == ["src/while_on.ts"]
    status = call(project, "automation.status")
    assert status["enabled"] is True and status["rules"][0]["fireCount"] == 1
    saved = json.loads(project.paths.daemon_dir.joinpath("automation.json").read_text())
    assert saved["enabled"] is True


def test_a_rule_disabled_by_cli_stays_disabled_across_a_restart(project: Project) -> None:
    configure(project, watch=WATCH,
              rules=[file_rule("ts", "src/**/*.ts"), file_rule("all", "src/**")])
    (project.root / "src").mkdir()
    start(project)
    off = project.aiwg("automation", "disable", "--rule", "ts", check=True)
    assert off.stdout.strip() == "rule ts disabled"

    write(project, "src/a.ts")
    [control] = wait_rule_tasks(project, "all")  # the other rule still fires on the same change
    assert file_lines(control, "all: review") == ["src/a.ts"]
    holds(lambda: not rule_tasks(project, "ts"))
    ts = rule_status(project, "ts")
    assert ts["enabled"] is False and ts["enabledBy"] == "override" and ts["fireCount"] == 0
    assert rule_status(project, "all")["enabledBy"] == "config"
    saved = json.loads(project.paths.daemon_dir.joinpath("automation.json").read_text())
    assert saved == {"enabled": True, "rules": {"ts": False}}

    restart(project)
    ts = rule_status(project, "ts")
    assert ts["enabled"] is False and ts["enabledBy"] == "override"
    table = project.aiwg("automation", "status", check=True).stdout
    ts_row = next(line for line in table.splitlines() if line.startswith("ts "))
    assert ts_row.split()[1] == "no*"
    write(project, "src/b.ts")
    wait_for(lambda: any(file_lines(t, "all: review") == ["src/b.ts"]
                         for t in rule_tasks(project, "all")))
    holds(lambda: not rule_tasks(project, "ts"))

    on = project.aiwg("automation", "enable", "--rule", "ts", check=True)
    assert on.stdout.strip() == "rule ts enabled"
    write(project, "src/c.ts")
    [task] = wait_rule_tasks(project, "ts")
    assert file_lines(task, "ts: review") == ["src/c.ts"]
    assert rule_status(project, "ts")["enabled"] is True


def test_reload_applies_new_rules_and_watch_settings_and_keeps_overrides(project: Project) -> None:
    old = event_rule("old", "deployment:complete", "old rule")
    configure(project, rules=[old])  # no watching yet
    pid = start(project)
    project.aiwg("automation", "disable", "--rule", "old", check=True)
    (project.root / "src").mkdir()
    configure(project, watch=WATCH, rules=[
        old, event_rule("new", "deployment:complete", "new rule"), file_rule("ts", "src/**/*.ts")])
    project.aiwg("daemon", "reload", check=True)
    wait_for(lambda: subsystem(project, "file_watcher").get("running"))

    project.aiwg("event", "emit", "deployment:complete", check=True)
    write(project, "src/after_reload.ts")
    [task] = wait_rule_tasks(project, "ts")
    assert file_lines(task, "ts: review") == ["src/after_reload.ts"]
    wait_rule_tasks(project, "new")
    holds(lambda: not rule_tasks(project, "old"))  # its override outlived the reload
    assert rule_status(project, "old")["enabledBy"] == "override"
    assert project.pid() == pid


def test_an_unknown_rule_is_an_error_naming_it(project: Project) -> None:
    configure(project, rules=[event_rule("smoke-test", "deployment:complete", "smoke test")])
    start(project)
    for verb in ("disable", "enable"):
        result = project.aiwg("automation", verb, "--rule", "no-such-rule")
        assert result.returncode != 0
        assert "no-such-rule" in result.stderr
    with pytest.raises(RpcError) as caught:
        call(project, "automation.disable", ruleId="no-such-rule")
    assert caught.value.code == INVALID_PARAMS and "no-such-rule" in caught.value.message
    assert "smoke-test" in caught.value.message  # and says which rules exist
    status = call(project, "automation.status")
    assert [r["id"] for r in status["rules"]] == ["smoke-test"]
    assert status["rules"][0]["enabled"] is True
    assert not project.paths.daemon_dir.joinpath("automation.json").exists()


# -- events --------------------------------------------------------------------


def test_an_event_rule_fires_on_a_cli_emit_with_the_payload_in_its_prompt(project: Project) -> None:
    prompt = "Smoke-test release {event.payload.version} ({event.topic}, {rule.id})"
    configure(project, rules=[event_rule("smoke", "deployment:complete", prompt)])
    start(project)
    for topic in ("deployment:started", "deployment:complete"):
        project.aiwg("event", "emit", topic, "--payload", '{"version":"1.2.3"}', check=True)

    [task] = wait_rule_tasks(project, "smoke")
    assert task["prompt"] == "Smoke-test release 1.2.3 (deployment:complete, smoke)"
    assert task["metadata"] == {"ruleId": "smoke", "trigger": "deployment:complete",
                                "chainDepth": 1}
    assert wait_finished(project, task["id"])["state"] == "completed"
    [run] = project.fake.runs()
    assert agent_prompt(run) == "Smoke-test release 1.2.3 (deployment:complete, smoke)"
    holds(lambda: len(rule_tasks(project)) == 1)  # deployment:started matched nothing


def test_an_event_emitted_from_inside_a_task_counts_one_level_deeper(project: Project) -> None:
    configure(project, automation={"max_chain_depth": 2},
              rules=[event_rule("smoke", "deployment:complete", "smoke test")])
    start(project)
    project.aiwg("event", "emit", "deployment:complete", check=True)
    [first] = wait_rule_tasks(project, "smoke")
    assert first["metadata"]["chainDepth"] == 1

    inside_first = {**project.env, "AIWG_TASK_ID": first["id"]}  # as `first`'s agent would run it
    project.aiwg("event", "emit", "deployment:complete", env=inside_first, check=True)
    second = wait_rule_tasks(project, "smoke", 2)[1]
    assert second["metadata"]["chainDepth"] == 2

    inside_second = {**project.env, "AIWG_TASK_ID": second["id"]}
    project.aiwg("event", "emit", "deployment:complete", env=inside_second, check=True)
    wait_for(lambda: rule_status(project, "smoke")["throttledCount"] == 1)
    assert len(rule_tasks(project, "smoke")) == 2
    executions = call(project, "automation.status")["recentExecutions"]
    [throttled] = [e for e in executions if e["status"] == "throttled"]
    assert throttled["reason"] == "chain depth 2 reached the limit of 2"


def test_a_failed_task_fires_a_task_failed_rule_once(project: Project) -> None:
    prompt = "Investigate task {event.payload.taskId}"
    configure(project, rules=[event_rule("triage", "task:failed", prompt)])
    start(project)
    failing = call(project, "task.submit", prompt="break the build @exit:3")["taskId"]
    assert wait_finished(project, failing)["state"] == "failed"

    [task] = wait_rule_tasks(project, "triage")
    assert task["prompt"] == f"Investigate task {failing}"
    assert task["metadata"]["trigger"] == "task:failed"
    assert task["metadata"]["chainDepth"] == 1
    assert wait_finished(project, task["id"])["state"] == "completed"
    holds(lambda: len(rule_tasks(project)) == 1)  # its own task succeeded: nothing more
    assert sorted(agent_prompt(r) for r in project.fake.runs()) == sorted(
        ["break the build @exit:3", f"Investigate task {failing}"])


# -- the loop guard ------------------------------------------------------------


@pytest.mark.parametrize(
    ("automation", "rule_extra", "limit", "reason"),
    [
        # the defaults: 10 fires a minute, chain depth 3
        ({}, {}, 10, "fired 10 times in the last minute (limit 10)"),
        ({"max_chain_depth": 10}, {"max_fires_per_minute": 4}, 4,
         "fired 4 times in the last minute (limit 4)"),
        ({"max_fires_per_minute": 50, "max_chain_depth": 2}, {}, None,
         "chain depth 2 reached the limit of 2"),
    ],
    ids=["default-rate", "per-rule-rate", "chain-depth"],
)
def test_a_self_triggering_rule_is_throttled_and_stays_bounded(
    project: Project, automation: dict[str, Any], rule_extra: dict[str, Any],
    limit: int | None, reason: str,
) -> None:
    loop = {**event_rule("echo", "task:*", "echo {event.topic}"), **rule_extra}
    meta = event_rule("meta", "automation:*", "never: the engine's own events trigger nothing")
    configure(project, rules=[loop, meta], **({"automation": automation} if automation else {}))
    start(project)
    snapshots: list[list[tuple[str, str]]] = []

    def settled() -> list[dict[str, Any]]:
        """The rule's tasks, once all have finished and two polls in a row agree."""
        created = rule_tasks(project, "echo")
        snapshots.append([(t["id"], t["state"]) for t in created])
        done = created and all(t["state"] not in ("queued", "running") for t in created)
        return created if done and len(snapshots) > 1 and snapshots[-1] == snapshots[-2] else []

    with project.client(timeout=15) as listener:
        listener.subscribe(["automation:throttled"])
        kick = call(project, "task.submit", prompt="kick it off")["taskId"]
        created = wait_for(settled, timeout=30, interval=0.2)
        # no runaway once the guard has stepped in
        holds(lambda: len(rule_tasks(project, "echo")) == len(created))
        throttled = [e["payload"] for e in listener.events(timeout=0.5)]
    assert throttled, "no automation:throttled event"
    assert all(p["ruleId"] == "echo" for p in throttled)
    assert reason in {p["reason"] for p in throttled}
    assert all(p["trigger"].startswith("task:") for p in throttled)
    assert all(p["trigger"] != "task:output" for p in throttled)
    depths = [t["metadata"]["chainDepth"] for t in created]
    if limit is not None:
        assert len(created) == limit  # exactly the rate limit within the first minute
    else:
        # Each task:* event (task:output aside) about a task fires once, one level deeper,
        # until the events are as deep as the limit: those are all refused.
        logged = [json.loads(line) for p in project.paths.events_dir.glob("*.jsonl")
                  for line in p.read_text().splitlines()]

        def events_about(ids: list[str]) -> int:
            return sum(1 for e in logged
                       if e["topic"].startswith("task:") and e["payload"].get("taskId") in ids)

        level1 = [t["id"] for t in created if t["metadata"]["chainDepth"] == 1]
        level2 = [t["id"] for t in created if t["metadata"]["chainDepth"] == 2]
        assert sorted(depths) == [1] * len(level1) + [2] * len(level2)
        assert len(level1) == events_about([kick]) >= 3  # queued, started, completed at least
        assert len(level2) == events_about(level1)
        assert len(throttled) == events_about(level2)
    assert max(depths) <= call(project, "automation.status")["limits"]["max_chain_depth"]
    assert all(t["metadata"]["trigger"] != "task:output" for t in created)
    assert not any(t["metadata"]["trigger"].startswith("automation:") for t in created)
    assert recent(project, "automation:fired") and not rule_tasks(project, "meta")
    meta_status = rule_status(project, "meta")
    assert meta_status["fireCount"] == meta_status["throttledCount"] == 0

    status = rule_status(project, "echo")
    assert status["throttledCount"] == len(throttled) and status["fireCount"] == len(created)
    warnings = [line for line in project.log_text().splitlines()
                if "automation rule echo throttled" in line]
    assert len(warnings) == len(throttled) and all(" warn " in line for line in warnings)
    assert any(line.endswith(f"automation rule echo throttled: {reason}") for line in warnings)
    assert call(project, "ping")["pong"] is True


def test_a_file_rule_whose_task_rewrites_its_own_files_is_throttled(project: Project) -> None:
    # The agent here appends to the file the rule watches: each task triggers the next. A
    # file:changed event names no task, so only the rate limit can stop this loop.
    configure(project, watch=WATCH,
              agent={"command": ["sh", "-c", 'echo "$0" >> src/generated.ts', "{prompt}"], "end_of_options": False},
              rules=[file_rule("regen", "src/**/*.ts", prompt="regenerate",
                               max_fires_per_minute=3)])
    (project.root / "src").mkdir()
    start(project)
    write(project, "src/input.ts")
    wait_for(lambda: rule_status(project, "regen")["throttledCount"] >= 1, timeout=15)
    holds(lambda: len(rule_tasks(project, "regen")) == 3)
    assert project.root.joinpath("src/generated.ts").read_text() == "regenerate\n" * 3
    assert "automation rule regen throttled: fired 3 times in the last minute (limit 3)" \
        in project.log_text()
    assert call(project, "ping")["pong"] is True


def test_a_debounced_rule_gathers_two_close_bursts_into_one_task(project: Project) -> None:
    interval_ms = 1200
    rule = file_rule("batch", "src/**/*.ts", prompt="batch:\n{files}",
                     condition={"type": "debounce", "interval_ms": interval_ms})
    configure(project, watch=WATCH, rules=[rule])
    (project.root / "src").mkdir()
    start(project)
    write(project, "src/one/a.ts", "src/one/b.ts")
    wait_file_event(project, "src/one/a.ts")
    assert not rule_tasks(project)  # held, not fired
    assert rule_status(project, "batch")["pending"] > 0
    write(project, "src/two/c.ts")
    wait_file_event(project, "src/two/c.ts")
    assert len(file_events(project)) == 2  # two separate bursts reached the rule ...
    assert not rule_tasks(project)  # ... which is still waiting for quiet

    [task] = wait_rule_tasks(project, "batch", timeout=interval_ms / 1000 + 5)
    assert sorted(file_lines(task, "batch:")) == ["src/one/a.ts", "src/one/b.ts", "src/two/c.ts"]
    holds(lambda: len(rule_tasks(project)) == 1, seconds=interval_ms / 1000 + 0.5)
    assert rule_status(project, "batch")["pending"] == 0

    write(project, "src/three/d.ts")  # a later burst starts a new batch
    second = wait_rule_tasks(project, "batch", 2, timeout=interval_ms / 1000 + 5)[1]
    assert file_lines(second, "batch:") == ["src/three/d.ts"]


# -- the schedule --------------------------------------------------------------


def test_schedule_lists_jobs_and_runs_a_user_action_on_demand(project: Project) -> None:
    weekly = {"id": "weekly", "trigger": {"type": "schedule", "cron": "0 9 * * 1"},
              "action": {"type": "submit_task", "prompt": "weekly report"}}
    configure(project, rules=[weekly],
              schedule={"enabled": True, "timezone": "Asia/Kolkata", "jobs": [  # UTC+05:30, no DST
                  {"name": "nightly-audit", "cron": "0 3 * * *", "action": "audit"},
                  {"name": "health", "cron": "*/5 * * * *", "action": "health-check"},
              ]},
              actions={"audit": {"prompt": "Audit the dependencies", "priority": 5}})
    start(project)
    listing = json.loads(project.aiwg("schedule", "list", "--json", check=True).stdout)
    assert listing["enabled"] is True
    jobs = {j["name"]: j for j in listing["jobs"]}
    assert set(jobs) == {"nightly-audit", "health", "rule:weekly"}  # schedule rules too
    now = datetime.now().astimezone()
    for job in jobs.values():
        next_fire = datetime.fromisoformat(job["nextFire"].replace("Z", "+00:00"))
        assert now < next_fire and job["lastFire"] is None and job["fires"] == 0
    audit = jobs["nightly-audit"]
    assert (audit["action"], audit["cron"]) == ("audit", "0 3 * * *")
    assert audit["nextFire"].endswith("T21:30:00.000Z")  # 03:00 in Kolkata
    assert jobs["rule:weekly"]["nextFire"].endswith("T03:30:00.000Z")  # Monday 09:00 there
    assert "nightly-audit" in project.aiwg("schedule", "list", check=True).stdout

    ran = project.aiwg("schedule", "run", "nightly-audit", check=True)
    [task] = tasks(project, "schedule:nightly-audit")
    assert ran.stdout.strip() == f"job nightly-audit: task {task['id']} submitted"
    assert task["prompt"] == "Audit the dependencies" and task["priority"] == 5
    assert task["metadata"] == {"schedule": "nightly-audit", "action": "audit"}
    assert wait_finished(project, task["id"])["state"] == "completed"
    [run] = project.fake.runs()
    assert agent_prompt(run) == "Audit the dependencies"

    health = json.loads(project.aiwg("schedule", "run", "health", "--json", check=True).stdout)
    assert health["action"] == "health-check" and health["health"]["status"]
    assert recent(project, "health:checked")
    state = json.loads(project.paths.state_file.read_text())
    assert state["last_health_check"]["status"] == health["health"]["status"]

    unknown = project.aiwg("schedule", "run", "no-such-job")
    assert unknown.returncode != 0 and "no-such-job" in unknown.stderr


@pytest.mark.slow
def test_an_every_minute_health_check_job_really_fires(project: Project) -> None:
    pulse = {"name": "pulse", "cron": "* * * * *", "action": "health-check"}
    tick = {"id": "tick", "trigger": {"type": "schedule", "cron": "* * * * *"},
            "action": {"type": "submit_task", "prompt": "tick from {rule.id}"}}
    configure(project, rules=[tick], schedule={"enabled": True, "jobs": [pulse]})
    start(project)
    before = {j["name"]: j for j in call(project, "schedule.list")["jobs"]}
    assert set(before) == {"pulse", "rule:tick"}
    assert all(j["nextFire"] is not None and j["lastFire"] is None for j in before.values())
    fired: dict[str, dict[str, Any]] = {}
    checked = None
    with project.client(timeout=10) as listener:
        listener.subscribe(["schedule:fired", "health:checked"])
        deadline = time.monotonic() + 75
        for event in listener.events(timeout=75):
            if event["topic"] == "schedule:fired":
                fired[event["payload"]["job"]] = event["payload"]
            else:
                checked = event["payload"]
            if (len(fired) == 2 and checked) or time.monotonic() > deadline:
                break
    assert set(fired) == {"pulse", "rule:tick"} and checked, f"in 75 s: {sorted(fired)}, {checked}"
    assert fired["pulse"]["action"] == "health-check"
    assert fired["pulse"]["scheduled"] == before["pulse"]["nextFire"]
    after = {j["name"]: j for j in call(project, "schedule.list")["jobs"]}
    assert after["pulse"]["fires"] == 1 and after["pulse"]["lastFire"] is not None
    assert after["pulse"]["nextFire"] > before["pulse"]["nextFire"]  # ISO UTC strings sort by time
    state = wait_for(
        lambda: json.loads(project.paths.state_file.read_text()).get("last_health_check"))
    assert state["status"] == checked["status"]
    [task] = wait_rule_tasks(project, "tick")
    assert task["prompt"] == "tick from tick" and task["metadata"]["trigger"] == "schedule:fired"
    assert after["rule:tick"]["lastTaskId"] == task["id"]


# -- secrets in a rule's env ---------------------------------------------------


def test_a_rules_env_reaches_the_task_and_nowhere_else(project: Project) -> None:
    secret = "dpl-SECRET-token-7f3a9"
    project.env["DEPLOY_TOKEN"] = secret
    # @env makes the fake claude print the variable: the task's output must not show it either.
    prompt = "deploy {event.payload.version} @env:DEPLOY_TOKEN"
    configure(project, rules=[event_rule("deploy", "release:approved", prompt,
                                         env={"DEPLOY_TOKEN": "${DEPLOY_TOKEN}"})])
    start(project)
    # status names the variables, never their values
    assert rule_status(project, "deploy")["action"]["env"] == ["DEPLOY_TOKEN"]
    project.aiwg("event", "emit", "release:approved", "--payload", '{"version": "2.0"}', check=True)
    wait_for(lambda: (r := rule_status(project, "deploy"))["lastTaskId"] or r["lastError"])
    assert rule_status(project, "deploy")["lastError"] is None
    [task] = rule_tasks(project, "deploy")
    record = wait_finished(project, task["id"])
    assert record["state"] == "completed"
    [run] = project.fake.runs()
    assert run["env"]["DEPLOY_TOKEN"] == secret  # the agent saw the value

    status_text = json.dumps(call(project, "automation.status"))
    project.aiwg("daemon", "stop", check=True)
    texts = {
        "task.get": json.dumps(record),
        "automation.status": status_text,
        "daemon.log": project.log_text(),
        "events log": "".join(p.read_text() for p in project.paths.events_dir.glob("*.jsonl")),
        "state.json": project.paths.state_file.read_text(),
        "the task's output file": Path(record["outputPath"]).read_text(),
    }
    for where, text in texts.items():
        assert secret not in text, f"the secret leaked into {where}"
    for store in project.paths.daemon_dir.glob("tasks.db*"):
        assert secret.encode() not in store.read_bytes(), f"the secret leaked into {store.name}"


def test_a_change_right_after_start_returns_is_seen(project: Project) -> None:
    """`aiwg daemon start` returns once the watches are in place, not merely once the
    socket answers."""
    (project.root / "src").mkdir(exist_ok=True)
    project.write_config(json.dumps({
        "agent": {"command": ["/bin/echo", "{prompt}"], "output": "text"},
        "watch": {"enabled": True, "debounce_ms": 100},
        "rules": [{"id": "r", "trigger": {"type": "file_change", "pattern": "src/**"},
                   "action": {"type": "submit_task", "prompt": "{files}"}}],
    }))
    project.start()
    (project.root / "src" / "first.ts").write_text("written the moment start returned")
    with project.client() as client:
        tasks = wait_for(lambda: client.call("task.list"), timeout=10)
    assert tasks[0]["prompt"] == "src/first.ts"


# As a watchdog release that reshaped its internals did: the flat watches the
# daemon uses to keep ignored trees out are added in the kernel, but their events
# reach nobody. Loaded into the daemon process by Python at start-up.
SITE_DEAF_WATCHES = '''
import watchdog.observers as _observers

class _Nobody:
    def dispatch(self, event):
        pass

_Stock = _observers.Observer

class _Deaf(_Stock):
    def schedule(self, handler, path, *, recursive=False, **kwargs):
        return super().schedule(handler if recursive else _Nobody(), path, recursive=recursive, **kwargs)

_observers.Observer = _Deaf
'''


def test_a_negated_ignore_entry_takes_a_file_back_as_in_a_gitignore(project: Project) -> None:
    configure(project, watch={**WATCH, "ignore": ["*.log", "!keep.log"]},
              rules=[file_rule("logs", "**/*.log", "{rule.id}: {files}")])
    start(project)
    write(project, "other.log", "deep/other.log")
    time.sleep(QUIET)
    assert rule_tasks(project, "logs") == []  # ignored
    write(project, "keep.log")
    [task] = wait_rule_tasks(project, "logs")
    assert "keep.log" in task["prompt"] and "other.log" not in task["prompt"]


def test_file_rules_fire_through_the_fallback_when_the_watches_do_not_deliver(project: Project, tmp_path: Path) -> None:
    """The real daemon, with watches whose events are lost: the start-up probe sees
    it, the stock recursive watch takes over, the rule fires, and `aiwg daemon
    status` names the degradation."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_DEAF_WATCHES)
    project.env["PYTHONPATH"] = str(site)
    (project.root / "src").mkdir()
    (project.root / "node_modules" / "dep" / "lib").mkdir(parents=True)
    configure(project, watch={**WATCH, "paths": ["."]}, rules=[file_rule("review", "src/**")])
    project.start()
    # The probe waits 10 s for events that never come, before it falls back.
    watcher = wait_for(lambda: (w := subsystem(project, "file_watcher")).get("running") and w, timeout=40)
    assert watcher["degraded"].startswith("file watcher degraded: native watches did not deliver")
    assert watcher["ignored_trees_watched"] is True
    write(project, "src/app.ts")
    [task] = wait_rule_tasks(project, "review")
    assert "src/app.ts" in task["prompt"]
    status = project.aiwg("daemon", "status")
    assert "file watcher degraded" in status.stdout and "watchdog " in status.stdout
    assert "stock recursive watch" in status.stdout
