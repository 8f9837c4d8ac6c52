"""What the messaging and approval end-to-end tests share: a daemon with a fake
Telegram beside it, and polling on the reactor."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest_twisted
from twisted.internet import reactor, task, threads

from tests.conftest import Project
from tests.fakes.telegram import FakeTelegram

TELEGRAM_TOKEN = "424242:AAF-telegram-secret-token"
ALICE, MALLORY = 111, 666
FAST = {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}
FINISHED = ("completed", "failed", "timeout", "cancelled", "rejected")


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


async def bridge_state(project: Project, platform: str, state: str) -> dict[str, Any]:
    deadline = reactor.seconds() + 20
    while (found := (await call(project, "messaging.status"))["adapters"][platform])["state"] != state:
        assert reactor.seconds() < deadline, f"{platform} never reached state {state}: {found}"
        await task.deferLater(reactor, 0.05, lambda: None)
    return found


def no_secret_in_log(project: Project, *secrets: str) -> None:
    log = project.log_text()
    assert log, "the daemon wrote no log"
    for secret in secrets:
        assert secret not in log


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
