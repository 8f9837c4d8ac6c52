"""ChatService with a Clock and a stand-in supervisor: resume ids, history in the
prompt for session-less agents, bounds and expiry on a timer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from aiwg.core.config import validate
from aiwg.core.tasks import TaskState
from aiwg.daemon.bus import EventBus
from aiwg.daemon.messaging.chat import EXPIRY_INTERVAL, SAVE_INTERVAL, ChatService


class Task:
    def __init__(self, id: str, prompt: str, metadata: dict, resume_session: str | None = None) -> None:
        self.id, self.prompt, self.metadata = id, prompt, metadata
        self.resume_session = resume_session
        self.state = TaskState.QUEUED
        self.result: str | None = None
        self.error: str | None = None
        self.output_tail = ""
        self.session_id: str | None = None


class Supervisor:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.store = self

    def add(self, prompt: str, *, priority: int, source: str, metadata: dict, resume_session: str | None,
            reply_to: dict | None, isolate: bool | None) -> Task:
        assert source == "chat" and reply_to is None
        assert isolate is False  # a chat turn works in the project root unless chat.isolate says otherwise
        task = Task(f"t-{len(self.tasks) + 1}", prompt, metadata, resume_session)
        task.priority = priority  # type: ignore[attr-defined]
        self.tasks[task.id] = task
        return task

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)


def make(output: str = "claude-json", **chat: Any) -> tuple[ChatService, Supervisor, EventBus, Clock]:
    clock = Clock()
    bus = EventBus(reactor=clock)
    supervisor = Supervisor()
    config = validate({"agent": {"output": output}, "chat": chat}, "test")
    service = ChatService(reactor=clock, bus=bus, config=config, supervisor=lambda: supervisor)
    service.startService()
    return service, supervisor, bus, clock


def finish(bus: EventBus, clock: Clock, task: Task, result: str, session: str | None = None,
           state: TaskState = TaskState.COMPLETED) -> None:
    task.state, task.result, task.session_id = state, result, session
    bus.publish(f"task:{state.value}", {"taskId": task.id, "state": state.value})
    clock.advance(0)


def test_follow_up_turns_resume_the_latest_session() -> None:
    service, supervisor, bus, clock = make()
    first = service.send("hello", None, None)
    conversation = first.metadata["conversation"]
    assert first.resume_session is None and first.priority == 5
    finish(bus, clock, first, "hi", "s-1")
    second = service.send("more", conversation, 9)
    assert second.resume_session == "s-1" and second.priority == 9
    finish(bus, clock, second, "sure", "s-2")
    third = service.send("again", conversation, None)
    assert third.resume_session == "s-2"
    other = service.send("unrelated", None, None)
    assert other.resume_session is None
    assert other.metadata["conversation"] != conversation
    history = service.history(conversation)["history"]
    assert [t["text"] for t in history] == ["hello", "hi", "more", "sure", "again"]


def test_session_less_agents_get_history_in_the_prompt() -> None:
    service, supervisor, bus, clock = make(output="text")
    first = service.send("What is 2+2?", "c-x", None)
    assert first.prompt == "What is 2+2?"
    finish(bus, clock, first, "4")
    second = service.send("Doubled?", "c-x", None)
    assert "User: What is 2+2?" in second.prompt and "Assistant: 4" in second.prompt
    assert second.prompt.endswith("User: Doubled?")


def test_reset_starts_afresh() -> None:
    service, supervisor, bus, clock = make()
    first = service.send("hello", "c-r", None)
    finish(bus, clock, first, "hi", "s-1")
    assert service.reset("c-r") is True
    again = service.send("hello again", "c-r", None)
    assert again.resume_session is None


def test_idle_conversations_expire_on_the_timer_and_memory_stays_flat() -> None:
    service, supervisor, bus, clock = make(idle_hours=1, max_turns=4)
    for i in range(200):
        task = service.send(f"q{i}", "c-long", None)
        finish(bus, clock, task, f"a{i}", f"s-{i}")
    assert len(service.history("c-long")["history"]) == 4
    assert service._turn_of == {}
    for i in range(50):
        finish(bus, clock, service.send("one-off", None, None), "x")
    assert len(service.chats) == 51
    clock.advance(3600 + EXPIRY_INTERVAL)
    assert len(service.chats) == 0
    service.stopService()
    assert clock.getDelayedCalls() == []


def test_conversations_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "conversations.json"
    clock = Clock()
    bus = EventBus(reactor=clock)
    supervisor = Supervisor()
    config = validate({}, "test")
    service = ChatService(reactor=clock, bus=bus, config=config, supervisor=lambda: supervisor, state_file=state)
    service.startService()
    first = service.send("hello", "c-keep", None)
    finish(bus, clock, first, "hi", "s-1")
    clock.advance(SAVE_INTERVAL)
    assert json.loads(state.read_text())["conversations"][0]["sessionId"] == "s-1"
    second = service.send("more", "c-keep", None)
    finish(bus, clock, second, "sure", "s-2")
    service.stopService()  # saves what changed since
    again = ChatService(reactor=clock, bus=bus, config=config, supervisor=lambda: supervisor, state_file=state)
    again.startService()
    follow_up = again.send("and then?", "c-keep", None)
    assert follow_up.resume_session == "s-2"
    assert [t["text"] for t in again.history("c-keep")["history"]][:4] == ["hello", "hi", "more", "sure"]
    again.stopService()
    state.write_text("{not json")
    broken = ChatService(reactor=clock, bus=bus, config=config, supervisor=lambda: supervisor, state_file=state)
    broken.startService()  # an unreadable file is ignored, not fatal
    assert len(broken.chats) == 0
    broken.stopService()
