"""Messaging end to end: the real daemon, the fake claude, and a loopback fake of each
chat platform's API, served from this test process's reactor.

The daemon is driven from threads (the CLI and DaemonClient block) so the reactor
keeps serving the fakes meanwhile; waits are bounded polls.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from tests.conftest import Project
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.e2e

TELEGRAM_TOKEN = "424242:AAF-telegram-secret-token"
ALICE, MALLORY = 111, 666
FAST = {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}
FINISHED = ("completed", "failed", "timeout", "cancelled")


# -- helpers -------------------------------------------------------------------


def in_thread(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return threads.deferToThread(f, *args, **kwargs)


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `predicate` on the reactor until it returns something true."""
    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await task.deferLater(reactor, 0.05, lambda: None)


async def call(project: Project, method: str, **params: Any) -> Any:
    def blocking() -> Any:
        with project.client() as client:
            return client.call(method, **params)
    return await in_thread(blocking)


async def start(project: Project, messaging: dict[str, Any], **sections: Any) -> None:
    project.write_config(json.dumps({"daemon": FAST, "messaging": messaging, **sections}))
    await in_thread(project.start)


async def wait_task(project: Project, task_id: str) -> dict[str, Any]:
    async def finished() -> Any:
        found = await call(project, "task.get", taskId=task_id)
        return found if found["state"] in FINISHED else None
    deadline = reactor.seconds() + 20
    while reactor.seconds() < deadline:
        found = await finished()
        if found:
            return found
        await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"task {task_id} did not finish")


def no_secret_in_log(project: Project, *secrets: str) -> None:
    log = project.log_text()
    assert log, "the daemon wrote no log"
    for secret in secrets:
        assert secret not in log


# -- Telegram --------------------------------------------------------------------


async def stop_daemon_then(project: Project, fake: Any) -> None:
    """Stop the daemon while the fake still answers, then the fake (on the reactor)."""
    if project.running():
        await in_thread(project.aiwg, "daemon", "stop", "--timeout", "30")
    await fake.stop()


@pytest_twisted.async_yield_fixture
async def telegram(project: Project) -> Any:
    fake = FakeTelegram(TELEGRAM_TOKEN)
    fake.base_url = fake.listen()
    yield fake
    await stop_daemon_then(project, fake)


def telegram_config(fake: FakeTelegram, **overrides: Any) -> dict[str, Any]:
    section = {
        "enabled": True, "bot_token": "${TELEGRAM_BOT_TOKEN}", "chat_ids": [ALICE],
        "allowed_users": [ALICE], "api_base_url": fake.base_url, "poll_timeout_seconds": 2,
        "notify": {"topics": ["task:completed", "task:failed", "task:timeout"]},
    }
    return {"telegram": {**section, **overrides}}


def telegram_texts(fake: FakeTelegram, chat: int = ALICE) -> list[str]:
    return [m["text"] for m in fake.sent if int(m["chat_id"]) == chat]


@pytest_twisted.ensureDeferred
async def test_telegram_task_failure_is_notified_in_html(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    submitted = await call(project, "task.submit", prompt="Fix <the> build & ship @exit:3 @stderr:boom")
    await wait_task(project, submitted["taskId"])
    [text] = await eventually(lambda: telegram_texts(telegram), what="a notification")
    [sent] = telegram.sent
    assert sent["parse_mode"] == "HTML"
    assert f"<b>Task {submitted['taskId']} failed</b>" in text
    assert "<b>exit code</b>: 3" in text
    assert "Fix &lt;the&gt; build &amp; ship" in text  # escaped for HTML parse mode
    assert "<pre>" in text and "boom" in text  # the output tail
    status = await call(project, "messaging.status")
    assert status["adapters"]["telegram"]["state"] == "connected"
    assert status["adapters"]["slack"] == {"state": "disabled"}
    no_secret_in_log(project, TELEGRAM_TOKEN)


@pytest_twisted.ensureDeferred
async def test_telegram_task_command_queues_and_posts_the_result(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, notify={"topics": []}))
    telegram.message("/task write the changelog @result:changelog-written", user_id=ALICE)
    queued = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith("Queued task")])
    task_id = re.match(r"Queued task (\S+)\.", queued[0]).group(1)
    record = await wait_task(project, task_id)
    assert record["source"] == "messaging:telegram" and record["state"] == "completed"
    done = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith(f"Task {task_id}")])
    assert done[0].startswith(f"Task {task_id} completed in ") and done[0].endswith("changelog-written")
    replies = [m for m in telegram.sent if m["text"] == done[0]]
    assert replies[0]["reply_to_message_id"]  # in reply to the /task message


@pytest_twisted.ensureDeferred
async def test_telegram_chat_answers_in_the_same_chat_and_resumes(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram), agent={"output": "claude-json"})
    telegram.message("What does the scheduler do?", user_id=ALICE)
    first = await eventually(lambda: telegram_texts(telegram))
    assert first == ["done: What does the scheduler do?"]
    telegram.message("And the watcher?", user_id=ALICE)
    second = await eventually(lambda: telegram_texts(telegram)[1:])
    assert re.fullmatch(r"resumed sess-\d+: done: And the watcher\?", second[0])
    history = await call(project, "chat.history", conversation=f"telegram:{ALICE}")
    assert [t["role"] for t in history["history"]] == ["user", "assistant", "user", "assistant"]
    tasks = await call(project, "task.list")
    assert {t["source"] for t in tasks} == {"messaging:telegram"}
    # A chat answer is a reply, not also a "task completed" notification.
    assert len(telegram.sent) == 2


@pytest_twisted.ensureDeferred
async def test_telegram_stranger_is_refused_and_nothing_is_queued(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    telegram.message("/task rm -rf everything", user_id=MALLORY, username="mallory")
    telegram.message("hello?", user_id=MALLORY, username="mallory")
    refusal = await eventually(lambda: telegram_texts(telegram, MALLORY))
    assert "not allowed" in refusal[0] and str(MALLORY) in refusal[0]
    deadline = reactor.seconds() + 10
    while (await call(project, "messaging.status"))["adapters"]["telegram"]["refused"] < 2:
        assert reactor.seconds() < deadline, "the second message was not refused"
        await task.deferLater(reactor, 0.05, lambda: None)
    assert await call(project, "task.list") == []
    assert len(telegram_texts(telegram, MALLORY)) == 1  # one refusal, not one per message
    assert f"refused user {MALLORY} (mallory)" in project.log_text()


@pytest_twisted.ensureDeferred
async def test_telegram_dropped_poll_is_re_established(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    await eventually(lambda: telegram._waiting is not None, what="a long poll")
    telegram.drop_poll()
    telegram.fail_next("getUpdates", 502)
    telegram.message("/help", user_id=ALICE)
    help_text = await eventually(lambda: telegram_texts(telegram), timeout=30)
    assert help_text[0].startswith("Commands:")
    status = await call(project, "messaging.status")
    assert status["adapters"]["telegram"]["reconnects"] >= 1
    assert status["adapters"]["telegram"]["state"] == "connected"
    no_secret_in_log(project, TELEGRAM_TOKEN)


@pytest_twisted.ensureDeferred
async def test_missing_token_variable_leaves_the_daemon_running(project: Project, telegram: FakeTelegram) -> None:
    project.env.pop("TELEGRAM_BOT_TOKEN", None)
    await start(project, telegram_config(telegram))
    status = await call(project, "daemon.status")
    bridge = status["subsystems"]["messaging"]["adapters"]["telegram"]
    assert bridge["state"] == "error" and "TELEGRAM_BOT_TOKEN" in bridge["detail"]
    assert status["health"] == "degraded"
    assert (await call(project, "ping"))
