"""Looking after the task list, as pm2 and supervisorctl users expect: paging that
says how much there is, a source column and filter, retry, rm and prune."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Project, wait_for

pytestmark = pytest.mark.e2e


def submit(project: Project, *args: str) -> str:
    result = project.aiwg("task", "submit", *args, "--wait", "--json")
    return json.loads(result.stdout.splitlines()[-1])["task"]["id"]


def test_the_list_says_how_many_there_are_and_filters_by_source(daemon: Project) -> None:
    ids = [submit(daemon, f"job {i}") for i in range(3)]
    with daemon.client() as client:
        client.call("task.submit", prompt="from a tool", source="client:ci")
    shown = daemon.aiwg("task", "list", "--limit", "2")
    assert shown.returncode == 0
    header = shown.stdout.splitlines()[0].split()
    assert header == ["ID", "STATE", "PRI", "SOURCE", "AGE", "DURATION", "PROMPT"]
    assert "1–2 of 4; next: --offset 2" in shown.stderr
    last = daemon.aiwg("task", "list", "--limit", "2", "--offset", "2")
    assert "3–4 of 4" in last.stderr and "next" not in last.stderr
    mine = json.loads(daemon.aiwg("task", "list", "--source", "client:*", "--json").stdout)
    assert [t["source"] for t in mine] == ["client:ci"]
    cli_only = daemon.aiwg("task", "list", "--source", "cli")
    assert all(i in cli_only.stdout for i in ids) and "client:ci" not in cli_only.stdout
    stats = daemon.aiwg("task", "stats").stdout.splitlines()
    assert len({len(line) for line in stats}) == 1  # the counts line up


def test_retry_runs_an_ended_task_again_with_its_settings(daemon: Project) -> None:
    old = submit(daemon, "flaky @exit:3", "--priority", "4")
    retried = daemon.aiwg("task", "retry", old, "--json")
    assert retried.returncode == 0, retried.stderr
    new = json.loads(retried.stdout)
    assert new["retryOf"] == old and new["taskId"] != old
    record = wait_for(lambda: (t := json.loads(daemon.aiwg("task", "get", new["taskId"], "--json").stdout))
                      ["state"] in ("completed", "failed") and t)
    assert record["prompt"] == "flaky @exit:3" and record["priority"] == 4
    assert record["metadata"]["retryOf"] == old
    with daemon.client() as client:
        running = client.call("task.submit", prompt="long @sleep:10")["taskId"]
    busy = daemon.aiwg("task", "retry", running)
    assert busy.returncode == 1 and "has not ended" in busy.stderr
    assert daemon.aiwg("task", "retry", "t-nosuchtask").returncode == 1
    daemon.aiwg("task", "cancel", running, check=True)


def test_rm_and_prune_delete_ended_tasks_with_their_files_and_never_a_live_one(daemon: Project) -> None:
    ended = [submit(daemon, f"done {i} @print:2") for i in range(3)]
    outputs = [Path(json.loads(daemon.aiwg("task", "get", i, "--json").stdout)["outputPath"]) for i in ended]
    assert all(p.exists() for p in outputs)
    with daemon.client() as client:
        live = client.call("task.submit", prompt="still going @sleep:10")["taskId"]
    wait_for(lambda: json.loads(daemon.aiwg("task", "get", live, "--json").stdout)["state"] == "running")
    removed = daemon.aiwg("task", "rm", ended[0], live, "--json")
    assert removed.returncode == 1  # one could not be
    report = json.loads(removed.stdout)
    assert report["removed"] == [ended[0]] and "has not ended" in report["kept"][live]
    assert not outputs[0].exists()
    assert daemon.aiwg("task", "get", ended[0]).returncode == 1
    time.sleep(1.1)
    young = submit(daemon, "young @print:1")
    pruned = json.loads(daemon.aiwg("task", "prune", "--older-than", "1s", "--json").stdout)
    assert sorted(pruned["removed"]) == sorted(ended[1:])
    assert not any(p.exists() for p in outputs)
    assert json.loads(daemon.aiwg("task", "get", young, "--json").stdout)["state"] == "completed"
    assert json.loads(daemon.aiwg("task", "get", live, "--json").stdout)["state"] == "running"
    daemon.aiwg("task", "cancel", live, check=True)
    stats = json.loads(daemon.aiwg("task", "stats", "--json").stdout)
    assert stats["total"] == 2
