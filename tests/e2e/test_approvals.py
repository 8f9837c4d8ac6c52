"""Approval gates end to end: a gated task never starts until a person approves it
(CLI, socket, or an allowed chat user through the fake Telegram), and a rejection or
the expiry ends it unrun."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import Project, wait_for
from tests.fakes.messaging_project import (ALICE, FAST, MALLORY, TELEGRAM_TOKEN, bridge_state, call, eventually,
                                      in_thread, start, telegram_config, telegram_texts, wait_task)
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.e2e


def configure(project: Project, **sections: Any) -> None:
    project.write_config(json.dumps({"daemon": FAST, **sections}))


def get(project: Project, task_id: str) -> dict[str, Any]:
    with project.client() as client:
        return client.call("task.get", taskId=task_id)


def submitted_id(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["taskId"]


def test_a_gated_task_waits_for_approval_from_the_cli(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submitted_id(project.aiwg("task", "submit", "gated work", "--require-approval", "--json"))
    time.sleep(1.0)  # long enough for an ungated task to have run many times over
    record = get(project, task_id)
    assert record["state"] == "awaiting_approval" and record["metadata"]["approvalExpiresAt"]
    assert project.fake.runs() == []
    stats = json.loads(project.aiwg("task", "stats", "--json", check=True).stdout)
    assert stats["awaiting_approval"] == 1 and stats["running"] == 0
    approved = project.aiwg("task", "approve", task_id)
    assert approved.returncode == 0 and f"Task {task_id} approved" in approved.stdout
    done = wait_for(lambda: (t := get(project, task_id))["state"] == "completed" and t)
    assert done["metadata"]["approvedBy"].startswith("cli:")
    assert len(project.fake.runs()) == 1
    again = project.aiwg("task", "approve", task_id)
    assert again.returncode == 1 and "is not awaiting approval (it is completed)" in again.stderr


def test_reject_and_expiry_end_the_task_unrun(project: Project) -> None:
    configure(project, approvals={"expire_hours": 0.0005})  # 1.8 s
    project.start()
    rejected_id = submitted_id(project.aiwg("task", "submit", "risky", "--require-approval", "--json"))
    expiring_id = submitted_id(project.aiwg("task", "submit", "forgotten", "--require-approval", "--json"))
    result = project.aiwg("task", "reject", rejected_id, "--reason", "not today")
    assert result.returncode == 0, result.stderr
    rejected = get(project, rejected_id)
    assert rejected["state"] == "rejected" and rejected["error"].endswith(": not today")
    expired = wait_for(lambda: (t := get(project, expiring_id))["state"] == "rejected" and t, timeout=10)
    assert expired["error"] == "rejected by expiry: approval expired after 0.0005 h"
    assert project.fake.runs() == []
    unknown = project.aiwg("task", "approve", "t-nosuchtask")
    assert unknown.returncode == 1 and "no task with id t-nosuchtask" in unknown.stderr


def test_sources_in_require_for_are_gated_and_the_wait_survives_a_restart(project: Project) -> None:
    configure(project, approvals={"require_for": ["rule:*"]}, rules=[{
        "id": "on-deploy", "trigger": {"type": "event", "topic": "deploy:done"},
        "action": {"type": "submit_task", "prompt": "smoke test the deploy"}}])
    project.start()
    project.aiwg("event", "emit", "deploy:done", check=True)
    [waiting] = wait_for(lambda: (found := json.loads(project.aiwg("task", "list", "--state", "awaiting_approval",
                                                                   "--json", check=True).stdout)) and found)
    assert waiting["source"] == "rule:on-deploy"
    plain = submitted_id(project.aiwg("task", "submit", "ungated", "--json"))
    wait_for(lambda: get(project, plain)["state"] == "completed")  # other sources run as usual
    project.aiwg("daemon", "stop", check=True)
    project.start()
    assert get(project, waiting["id"])["state"] == "awaiting_approval"
    with project.client() as client:
        assert client.call("task.approve", taskId=waiting["id"], by="release-bot") == {
            "approved": True, "state": "queued"}
    assert wait_for(lambda: get(project, waiting["id"])["state"] == "completed")


@pytest_twisted.ensureDeferred
async def test_an_allowed_chat_user_approves_and_a_stranger_cannot(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, allowed_users=[ALICE], chat_ids=[ALICE, 4242],
                                         notify={"topics": ["task:awaiting_approval", "task:rejected"]}),
                approvals={"require_for": ["messaging:*"]})
    await bridge_state(project, "telegram", "connected")
    telegram.message("/task deploy to staging", user_id=ALICE)
    asked = await eventually(lambda: [t for t in telegram_texts(telegram) if "awaits approval before" in t])
    task_id = asked[0].split()[1]
    assert f"/approve {task_id}" in asked[0]
    # The other notification targets get the notice, with the commands to approve.
    notice = await eventually(lambda: [t for t in telegram_texts(telegram, 4242) if "awaits approval" in t])
    assert f"/approve {task_id}" in notice[0] and f"aiwg task approve {task_id}" in notice[0]
    telegram.message(f"/approve {task_id}", user_id=MALLORY, username="mallory")
    await eventually(lambda: telegram_texts(telegram, MALLORY), what="the stranger refused")
    assert (await call(project, "task.get", taskId=task_id))["state"] == "awaiting_approval"
    telegram.message(f"/approve {task_id}", user_id=ALICE)
    await eventually(lambda: f"Approved task {task_id}: it is queued." in telegram_texts(telegram))
    record = await wait_task(project, task_id)
    assert record["state"] == "completed" and record["metadata"]["approvedBy"] == f"telegram:{ALICE} (alice)"
    await eventually(lambda: any(t.startswith(f"Task {task_id} completed") for t in telegram_texts(telegram)))
    # A second gated task, rejected from the chat: the asker hears the outcome.
    telegram.message("/task drop the database", user_id=ALICE)
    second = await eventually(lambda: [t for t in telegram_texts(telegram) if "awaits approval before" in t][1:])
    other_id = second[0].split()[1]
    telegram.message(f"/reject {other_id} too dangerous", user_id=ALICE)
    rejected = await wait_task(project, other_id)
    assert rejected["state"] == "rejected" and rejected["error"].endswith(": too dangerous")
    await eventually(lambda: any(t.startswith(f"Task {other_id} rejected") for t in telegram_texts(telegram)))
    runs = await in_thread(project.fake.runs)
    assert len(runs) == 1
