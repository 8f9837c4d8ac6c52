"""The task store across the schema-3 change, end to end: a store written by the
previous release opens and runs (its queued task with its own environment, a loop
resumed at its next iteration, a gated task approved), the wire keeps its field
names, and what this release writes keeps the daemon's own fields out of the
client's metadata."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, wait_for

pytestmark = pytest.mark.e2e

SCHEMA_2 = Path(__file__).parents[1] / "fixtures" / "tasks-schema2.db"
FAST = {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}
FINISHED = ("completed", "failed", "timeout", "cancelled", "rejected")
#: The metadata keys under which schema 2 kept what the daemon owns.
DAEMON_KEYS = {"_env", "loop", "approvalExpiresAt", "approvedBy", "rejectedBy", "resumeSession", "replyTo",
               "chainDepth"}


def call(project: Project, method: str, **params: Any) -> Any:
    with project.client() as client:
        return client.call(method, **params)


def finished(project: Project, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: (t := call(project, "task.get", taskId=task_id))["state"] in FINISHED and t,
                    timeout=30)


def stored_metadata(project: Project) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(f"file:{project.paths.tasks_db}?mode=ro", uri=True)
    try:
        return {i: json.loads(m) for i, m in db.execute("SELECT id, metadata FROM tasks")}
    finally:
        db.close()


def test_a_store_written_by_the_previous_release_opens_and_runs(project: Project) -> None:
    project.write_config(json.dumps({"daemon": FAST}))
    project.paths.daemon_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCHEMA_2, project.paths.tasks_db)
    (project.root / "loop-passes").write_text("")  # the resumed loop's check passes
    project.env["AIWG_FIXTURE_NAME"] = "world"
    project.start()

    env_task = finished(project, "t-v2env")
    assert env_task["state"] == "completed"
    assert env_task["env"] == ["AIWG_FIXTURE_GREETING"] and env_task["metadata"] == {"ticket": "ABC-1"}
    loop = finished(project, "t-v2loop")
    assert loop["state"] == "completed", loop["error"]
    progress = loop["metadata"]["loop"]
    assert progress["iteration"] == 2 and progress["until"] == "test -f loop-passes"
    assert [i["iteration"] for i in loop["iterations"]] == [2]  # resumed after the one it had finished
    runs = {r["env"].get("AIWG_TASK_ID"): r for r in project.fake.runs()}
    assert runs["t-v2env"]["env"]["AIWG_FIXTURE_GREETING"] == "hello world"
    assert "This is attempt 2 of at most 3" in " ".join(runs["t-v2loop"]["argv"])

    gate = call(project, "task.get", taskId="t-v2gate")
    assert gate["state"] == "awaiting_approval"
    assert gate["metadata"] == {"ruleId": "deploy", "trigger": "schedule:nightly", "chainDepth": 1,
                                "approvalExpiresAt": "2099-01-01T00:00:00.000Z"}
    project.aiwg("task", "approve", "t-v2gate", check=True)
    approved = finished(project, "t-v2gate")
    assert approved["state"] == "completed" and approved["metadata"]["approvedBy"].startswith("cli:")

    chat = call(project, "task.get", taskId="t-v2chat")
    assert chat["metadata"]["resumeSession"] == "s-1" and chat["metadata"]["replyTo"]["platform"] == "telegram"
    assert call(project, "task.get", taskId="t-v2own")["metadata"] == {"chainDepth": "deep", "resumeSession": 7}
    project.aiwg("daemon", "stop", check=True)
    left = {i: sorted(DAEMON_KEYS & set(m)) for i, m in stored_metadata(project).items() if i != "t-v2own"}
    assert all(not keys for keys in left.values()), left


def test_what_this_release_writes_keeps_the_daemons_fields_out_of_metadata(project: Project) -> None:
    project.env["DEPLOY_TOKEN"] = "tok-123456"
    project.write_config(json.dumps({"daemon": FAST, "rules": [{
        "id": "deploy", "trigger": {"type": "event", "topic": "release:approved"},
        "action": {"type": "submit_task", "prompt": "deploy", "env": {"DEPLOY_TOKEN": "${DEPLOY_TOKEN}"}},
    }]}))
    project.start()
    ids = []
    with project.client() as client:
        ids.append(client.call("task.submit", prompt="resume", metadata={"resumeSession": "s-9", "mine": 1})["taskId"])
        ids.append(client.call("task.submit", prompt="loop", until="true", maxIterations=2)["taskId"])
        gated = client.call("task.submit", prompt="gated", requireApproval=True)["taskId"]
        ids.append(gated)
        client.call("task.approve", taskId=gated, by="ipc:test")
        turn = client.call("chat.send", message="hello")
        ids.append(turn["taskId"])
    project.aiwg("event", "emit", "release:approved", check=True)
    rule_task = wait_for(lambda: [t for t in call(project, "task.list", limit=50) if t["source"] == "rule:deploy"])
    ids.append(rule_task[0]["id"])
    records = {i: finished(project, i) for i in ids}
    resumed = records[ids[0]]
    assert resumed["metadata"] == {"mine": 1, "resumeSession": "s-9"}
    assert "--resume" in next(r["argv"] for r in project.fake.runs() if r["env"].get("AIWG_TASK_ID") == ids[0])
    assert records[ids[1]]["metadata"]["loop"]["until"] == "true"
    assert records[gated]["metadata"]["approvedBy"] == "ipc:test"
    assert records[ids[-1]]["metadata"]["chainDepth"] == 1 and records[ids[-1]]["env"] == ["DEPLOY_TOKEN"]
    project.aiwg("daemon", "stop", check=True)
    stored = stored_metadata(project)
    assert {i: sorted(DAEMON_KEYS & set(stored[i])) for i in ids} == {i: [] for i in ids}
    assert stored[ids[0]] == {"mine": 1}
