"""The messaging hub on a Clock with a real event bus and fake bridges (no network):
who is let in, what each command answers, how a task's outcome finds its way back to
the chat that asked (even after a restart), which events become notifications, and
how a bad bridge is reported and retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
from attrs import evolve
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from aiwg.core.config import validate
from aiwg.core.messaging import HELP, REFUSAL, Command, Inbound, Notice
from aiwg.core.tasks import STATE_NAMES, Change, Task, TaskState
from aiwg.daemon.bus import EventBus
from aiwg.daemon.messaging.adapter import Adapter, SendError
from aiwg.daemon.messaging.hub import PLATFORMS, REFUSAL_INTERVAL, MessagingService

ALICE = "42"
STRANGER = "666"
ENVIRON = {"TELEGRAM_BOT_TOKEN": "tg-secret-value", "SLACK_BOT_TOKEN": "xoxb-value", "SLACK_APP_TOKEN": "xapp-value",
           "DISCORD_BOT_TOKEN": "discord-value"}


class FakeAdapter(Adapter):
    """A bridge whose sends succeed at once and are recorded."""

    def __init__(self, platform: str, state_dir: Path, **kwargs: Any) -> None:
        self.platform = platform
        super().__init__(**kwargs)
        self.state_dir = state_dir
        self.notices: list[tuple[Any, Notice]] = []
        self.replies: list[tuple[dict[str, Any], str]] = []
        self.bot_name = "aiwgbot" if platform == "telegram" else None
        self.refusing: dict[str, str] = {}  # target → why the platform refuses it

    def notice_targets(self) -> list[Any]:
        return list(self.section["chat_ids" if self.platform == "telegram" else "channel_ids"])

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        if str(target) in self.refusing:
            return fail(SendError(self.refusing[str(target)], permanent=True))
        self.notices.append((target, notice))
        return succeed(None)

    def send_reply(self, where: Mapping[str, Any], text: str) -> Deferred:
        self.replies.append((dict(where), text))
        return succeed(None)

    def listens(self) -> bool:
        return True

    def texts(self) -> list[str]:
        return [text for _, text in self.replies]

    def titles(self) -> list[tuple[str, str]]:
        return [(str(target), notice.title) for target, notice in self.notices]


class Store:
    """The task store as the hub uses it: get, list (newest first), when_durable."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.listed: list[tuple[Any, ...]] = []

    def put(self, task: Task) -> Task:
        self.tasks[task.id] = task
        return task

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def list(self, state: str | None, limit: int, offset: int) -> list[Task]:
        self.listed.append((state, limit, offset))
        found = sorted((t for t in self.tasks.values() if state in (None, t.state.value)), key=lambda t: -t.seq)
        return found[offset:offset + limit]

    def when_durable(self) -> Deferred:
        return succeed(None)

    def end(self, task_id: str, state: TaskState, **changes: Any) -> Task:
        """The task as the supervisor leaves it when it ends."""
        return self.put(evolve(self.tasks[task_id], state=state, **changes))


class NoIsolatedTasks:
    """The supervisor's isolation: here no task's branch ever awaits its merge."""

    def awaiting_merge(self, task_id: str) -> None:
        return None


class Supervisor:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.submitted: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.approvals: list[tuple[str, str]] = []
        self.rejections: list[tuple[str, str, str | None]] = []
        self.new_state = TaskState.QUEUED
        self.refuse_with: Exception | None = None
        self.isolation = NoIsolatedTasks()

    def add(self, task_id: str, state: TaskState, prompt: str = "a prompt", **fields: Any) -> Task:
        return self.store.put(Task(id=task_id, prompt=prompt, state=state, seq=len(self.store.tasks) + 1,
                                   created_at=self.clock.seconds(), **fields))

    def submit(self, prompt: str, *, source: str, metadata: dict[str, Any], reply_to: Any = None,
               **options: Any) -> Deferred:
        if self.refuse_with is not None:
            raise self.refuse_with
        self.submitted.append({"prompt": prompt, "source": source, "metadata": metadata, "reply_to": reply_to,
                               **options})
        return succeed(self.add(f"t-{len(self.submitted)}", self.new_state, prompt, source=source,
                                metadata=metadata, reply_to=reply_to))

    def cancel(self, task_id: str) -> Change:
        self.cancels.append(task_id)
        task = self.store.get(task_id)
        if task is None:
            return Change.unknown(task_id)
        if task.terminal:
            return Change(task_id, task, refused=f"task {task_id} has already ended ({task.state})")
        return Change.made(task)

    def approve(self, task_id: str, by: str) -> Change:
        self.approvals.append((task_id, by))
        return self._decide(task_id)

    def reject(self, task_id: str, by: str, reason: str | None = None) -> Change:
        self.rejections.append((task_id, by, reason))
        return self._decide(task_id)

    def _decide(self, task_id: str) -> Change:
        task = self.store.get(task_id)
        if task is None:
            return Change.unknown(task_id)
        if task.state != TaskState.AWAITING_APPROVAL:
            return Change.not_awaiting_approval(task)
        return Change.made(task)


class Chat:
    """Chat turns are tasks in the same store; a conversation exists once it had a turn."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sent: list[tuple[Any, ...]] = []
        self.resets: list[str] = []
        self.conversations: set[str] = set()

    def send(self, message: str, conversation: str | None, priority: int | None, *,
             source: str = "chat", metadata: dict[str, Any] | None = None, reply_to: Any = None) -> Task:
        self.sent.append((message, conversation, priority, source, metadata, reply_to))
        self.conversations.add(str(conversation))
        return self.store.put(Task(id=f"c-{len(self.sent)}", prompt=message, source=source,
                                   seq=len(self.store.tasks) + 1, metadata=metadata or {}, reply_to=reply_to))

    def reset(self, conversation: str) -> bool:
        self.resets.append(conversation)
        if conversation in self.conversations:
            self.conversations.discard(conversation)
            return True
        return False


def telegram(**overrides: Any) -> dict[str, Any]:
    return {"enabled": True, "bot_token": "${TELEGRAM_BOT_TOKEN}", "chat_ids": [100, 200],
            "allowed_users": [int(ALICE)], **overrides}


def slack(**overrides: Any) -> dict[str, Any]:
    return {"enabled": True, "bot_token": "${SLACK_BOT_TOKEN}", "app_token": "${SLACK_APP_TOKEN}",
            "channel_ids": ["C-ops"], "allowed_channels": ["C-team"], **overrides}


class Rig:
    def __init__(self, state_dir: Path, messaging: dict[str, Any] | None = None,
                 environ: Mapping[str, str] = ENVIRON, store: Store | None = None) -> None:
        self.clock = Clock()
        self.bus = EventBus(reactor=self.clock)
        self.store = store or Store()
        self.supervisor = Supervisor(self.store, self.clock)
        self.chat = Chat(self.store)
        self.status_calls = 0
        self.built: list[FakeAdapter] = []
        self.hub = MessagingService(
            reactor=self.clock, bus=self.bus, config=self.config(messaging), project="proj",
            environ=environ, daemon_status=self.daemon_status, supervisor=lambda: self.supervisor,
            chat=lambda: self.chat, state_dir=state_dir,
            factories={platform: self.factory(platform) for platform in PLATFORMS})

    @staticmethod
    def config(messaging: dict[str, Any] | None) -> Any:
        return validate({"messaging": messaging if messaging is not None else {"telegram": telegram()}},
                        "daemon.json")

    def factory(self, platform: str) -> Any:
        def build(**kwargs: Any) -> FakeAdapter:
            adapter = FakeAdapter(platform, **kwargs)
            self.built.append(adapter)
            return adapter
        return build

    def daemon_status(self) -> dict[str, Any]:
        self.status_calls += 1
        return {"health": "degraded", "health_issues": ["disk almost full"], "uptime_seconds": 3720,
                "subsystems": {"supervisor": {"running": 1, "queued": 2, "maxConcurrency": 3}}}

    def start(self) -> "Rig":
        self.hub.startService()
        return self

    def bridge(self, platform: str = "telegram") -> FakeAdapter:
        return self.hub.adapters[platform]

    def say(self, text: str, *, platform: str = "telegram", user: str = ALICE, chat: str = "100",
            name: str = "alice", command: Command | None = None, must_answer: bool = False,
            where: dict[str, Any] | None = None) -> Deferred:
        return self.hub.inbound(Inbound(
            platform=platform, user=user, chat=chat, text=text,
            where=where if where is not None else {"chat_id": chat, "message_id": 7},
            conversation=f"{platform}:{chat}", user_name=name, command=command, must_answer=must_answer))

    def answer(self, text: str, **kwargs: Any) -> str:
        """The one reply a message got."""
        bridge = self.bridge(kwargs.get("platform", "telegram"))
        before = len(bridge.replies)
        d = self.say(text, **kwargs)
        assert d.called
        assert len(bridge.replies) == before + 1, bridge.replies[before:]
        return bridge.replies[-1][1]

    def publish(self, topic: str, **payload: Any) -> None:
        self.bus.publish(topic, payload)
        self.clock.advance(0)

    def stop(self) -> None:
        if self.hub.running:
            assert self.hub.stopService().called


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path).start()
    yield r
    r.stop()
    assert r.bus.subscriber_count == 0 and r.clock.getDelayedCalls() == []


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """A started hub with the given `messaging` section; stopped after the test."""
    made: list[Rig] = []

    def build(messaging: dict[str, Any], **kwargs: Any) -> Rig:
        made.append(Rig(tmp_path, messaging, **kwargs).start())
        return made[-1]

    yield build
    for r in made:
        r.stop()
        assert r.bus.subscriber_count == 0 and r.clock.getDelayedCalls() == []


# -- the allowlist --------------------------------------------------------------------


def test_empty_allowlists_admit_nobody(make: Callable[..., Rig]) -> None:
    """An empty allowlist is a closed door, never an open one."""
    r = make({"telegram": telegram(allowed_users=[], allowed_chats=[])})
    assert r.answer("/task delete everything") == REFUSAL.format(user=ALICE)
    r.say("/status")
    r.say("just a question")
    assert r.supervisor.submitted == [] and r.chat.sent == [] and r.status_calls == 0
    assert r.bridge().counters["received"] == 3 and r.bridge().counters["refused"] == 3


@pytest.mark.parametrize("platform, section, user, chat", [
    ("telegram", telegram(allowed_users=[int(ALICE)]), ALICE, "-1001"),
    ("telegram", telegram(allowed_users=[], allowed_chats=[-1001]), STRANGER, "-1001"),
    ("slack", slack(allowed_users=["U42"], allowed_channels=[]), "U42", "C-other"),
    ("slack", slack(allowed_users=[], allowed_channels=["C-team"]), STRANGER, "C-team"),
    ("discord", {"enabled": True, "bot_token": "${DISCORD_BOT_TOKEN}", "allowed_channels": ["D-1"]},
     STRANGER, "D-1"),
])
def test_a_listed_user_or_chat_is_admitted(make: Callable[..., Rig], platform: str, section: dict[str, Any],
                                           user: str, chat: str) -> None:
    """Either list lets someone in: a user anywhere, or anyone in a listed chat/channel."""
    r = make({platform: section})
    assert r.answer("/help", platform=platform, user=user, chat=chat) == HELP
    assert r.bridge(platform).counters["received"] == 1 and r.bridge(platform).counters["refused"] == 0


def test_a_stranger_gets_one_refusal_per_interval(rig: Rig) -> None:
    """Telling a stranger once is polite; answering each of a flood of messages is spam."""
    bridge = rig.bridge()
    for text in ("/task rm -rf /", "hello?", "/status", "hello??", "/help"):
        rig.say(text, user=STRANGER, chat="999")
    assert bridge.replies == [({"chat_id": "999", "message_id": 7}, REFUSAL.format(user=STRANGER))]
    assert STRANGER in bridge.replies[0][1]
    rig.clock.advance(REFUSAL_INTERVAL - 1)
    rig.say("still there?", user=STRANGER, chat="999")
    assert len(bridge.replies) == 1
    rig.clock.advance(1)
    rig.say("and now?", user=STRANGER, chat="999")
    assert len(bridge.replies) == 2
    assert bridge.counters["received"] == 7 and bridge.counters["refused"] == 7
    assert rig.supervisor.submitted == [] and rig.chat.sent == [] and rig.status_calls == 0


def test_each_stranger_has_their_own_interval(rig: Rig) -> None:
    """One stranger's refusal does not silence the answer to another."""
    rig.say("hi", user=STRANGER, chat="999")
    rig.say("hi", user="667", chat="999")
    assert rig.bridge().texts() == [REFUSAL.format(user=STRANGER), REFUSAL.format(user="667")]


def test_a_stranger_that_must_be_answered_always_is(rig: Rig) -> None:
    """A Discord interaction fails visibly when unanswered: each one gets the refusal."""
    for _ in range(3):
        rig.say("/status", user=STRANGER, chat="999", must_answer=True)
    assert rig.bridge().texts() == [REFUSAL.format(user=STRANGER)] * 3
    rig.say("and this?", user=STRANGER, chat="999")  # an ordinary message within the interval
    assert len(rig.bridge().replies) == 3


def test_refuse_ignore_sends_nothing(make: Callable[..., Rig]) -> None:
    """`refuse: ignore`: a stranger learns nothing, not even that the bot exists."""
    r = make({"telegram": telegram(refuse="ignore")})
    r.say("hello", user=STRANGER, chat="999")
    r.say("/task x", user=STRANGER, chat="999", must_answer=True)
    assert r.bridge().replies == [] and r.supervisor.submitted == []
    assert r.bridge().counters["refused"] == 2


def test_a_message_for_a_platform_without_a_bridge_is_dropped(rig: Rig) -> None:
    """A late message from a bridge just stopped finds nobody: nothing happens, nothing raises."""
    d = rig.say("/task x", platform="discord", chat="D-1")
    assert d.called and rig.supervisor.submitted == []


# -- commands -----------------------------------------------------------------------


def test_help_and_unknown_commands(rig: Rig) -> None:
    """/help lists the commands; a typo says which command was not understood, then the list."""
    assert rig.answer("/help") == HELP
    assert rig.answer("/frobnicate now") == f"Unknown command /frobnicate.\n\n{HELP}"


def test_commands_addressed_to_this_bot_or_another(rig: Rig) -> None:
    """`/status@ourbot` is ours; `/status@otherbot` is not a command for us (a chat turn)."""
    assert rig.answer("/status@AIWGBOT").startswith("aiwg daemon for proj")
    rig.say("/status@otherbot")
    assert rig.chat.sent[0][0] == "/status@otherbot"


def test_status_reports_the_daemon_status(rig: Rig) -> None:
    """Health, uptime, the queue and each health issue, from daemon_status()."""
    assert rig.answer("/status") == ("aiwg daemon for proj: degraded, up 1h02m\n"
                                     "tasks: 1 running, 2 queued (at most 3 at once)\n"
                                     "- disk almost full")
    assert rig.status_calls == 1


def test_tasks_lists_recent_tasks_newest_first(rig: Rig) -> None:
    """Without a state: the last ten of any state, from the store."""
    assert rig.answer("/tasks") == "No tasks yet."
    rig.supervisor.add("t-old", TaskState.FAILED, "fix the flaky test")
    rig.clock.advance(120)
    rig.supervisor.add("t-new", TaskState.RUNNING, "update the docs")
    text = rig.answer("/tasks")
    lines = text.splitlines()
    assert lines[0] == "Recent tasks:"
    assert lines[1].startswith("t-new") and "running" in lines[1] and "update the docs" in lines[1]
    assert lines[2].startswith("t-old") and "2m ago" in lines[2]
    assert rig.store.listed[-1] == (None, 10, 0)


def test_tasks_with_a_state_filters(rig: Rig) -> None:
    """`/tasks FAILED` is read as the state name, case aside."""
    rig.supervisor.add("t-1", TaskState.FAILED)
    rig.supervisor.add("t-2", TaskState.COMPLETED)
    text = rig.answer("/tasks FAILED")
    assert text.splitlines()[0] == "Recent tasks (failed):" and "t-1" in text and "t-2" not in text
    assert rig.store.listed[-1] == ("failed", 10, 0)
    assert rig.answer("/tasks timeout") == "No timeout tasks."


def test_tasks_with_an_unknown_state_names_the_valid_ones(rig: Rig) -> None:
    """A typo is answered with the choices, and the store is not asked."""
    assert rig.answer("/tasks bogus") == f"Unknown state 'bogus'; use one of: {', '.join(STATE_NAMES)}."
    assert rig.store.listed == []


def test_task_without_a_prompt_explains_the_usage(rig: Rig) -> None:
    """An empty /task queues nothing."""
    assert rig.answer("/task   ").startswith("Usage: /task <prompt>")
    assert rig.supervisor.submitted == []


def test_task_queues_with_where_to_post_the_result(rig: Rig) -> None:
    """The reply address goes into the task's metadata (one-shot handles left out), so the
    result can come back even after a restart."""
    where = {"chat_id": "100", "message_id": 7, "_response_url": "https://one-shot.test/x"}
    text = rig.answer("/task  fix the failing tests ", where=where)
    (submitted,) = rig.supervisor.submitted
    assert submitted["prompt"] == "fix the failing tests"
    assert submitted["source"] == "messaging:telegram"
    assert submitted["reply_to"] == {"platform": "telegram", "chat": "100",
                                                "where": {"chat_id": "100", "message_id": 7}, "kind": "task"}
    assert submitted["metadata"]["requestedBy"] == {"user": ALICE, "name": "alice"}
    assert text == "Queued task t-1. I will post the result here (or /cancel t-1)."
    assert rig.bridge().replies[-1][0] == where  # the immediate answer may use the one-shot handle


def test_task_that_needs_approval_says_so(rig: Rig) -> None:
    """The asker learns the task waits for a person, and how to decide on it."""
    rig.supervisor.new_state = TaskState.AWAITING_APPROVAL
    text = rig.answer("/task deploy to production")
    assert text.startswith("Task t-1 awaits approval before it runs: /approve t-1 or /reject t-1")
    assert "Queued" not in text


@pytest.mark.parametrize("state, argument, expected", [
    (TaskState.RUNNING, "t-9", "Cancelling task t-9."),
    (TaskState.COMPLETED, "t-9", "Task t-9 has already ended (completed)."),
    (None, "t-404", "Unknown task t-404 (see /tasks)."),
    (None, "", "Usage: /cancel <task id> (see /tasks)."),
])
def test_cancel(rig: Rig, state: TaskState | None, argument: str, expected: str) -> None:
    """Each outcome of /cancel in words; without an id the supervisor is not asked."""
    if state is not None:
        rig.supervisor.add("t-9", state)
    assert rig.answer(f"/cancel {argument}") == expected
    assert rig.supervisor.cancels == ([argument] if argument else [])


@pytest.mark.parametrize("command, state, expected", [
    ("/approve t-5", TaskState.AWAITING_APPROVAL, "Approved task t-5: it is queued."),
    ("/reject t-5 not on a Friday", TaskState.AWAITING_APPROVAL, "Rejected task t-5."),
    ("/approve t-5", TaskState.RUNNING, "Task t-5 is not awaiting approval (it is running)."),
    ("/reject t-5", TaskState.REJECTED, "Task t-5 is not awaiting approval (it is rejected)."),
    ("/approve t-404", None, "Unknown task t-404 (see /tasks awaiting_approval)."),
    ("/reject t-404", None, "Unknown task t-404 (see /tasks awaiting_approval)."),
])
def test_approve_and_reject(rig: Rig, command: str, state: TaskState | None, expected: str) -> None:
    """Each outcome of a decision in words."""
    if state is not None:
        rig.supervisor.add("t-5", state)
    assert rig.answer(command) == expected


def test_approve_and_reject_record_who_decided_and_why(rig: Rig) -> None:
    """`by` names the platform, the user id and (when known) the name; a reason is optional."""
    rig.supervisor.add("t-5", TaskState.AWAITING_APPROVAL)
    rig.say("/approve t-5")
    rig.say("/reject t-5   too risky today ")
    rig.say("/reject t-5", name="")
    assert rig.supervisor.approvals == [("t-5", "telegram:42 (alice)")]
    assert rig.supervisor.rejections == [("t-5", "telegram:42 (alice)", "too risky today"),
                                         ("t-5", "telegram:42", None)]


@pytest.mark.parametrize("command, expected", [
    ("/approve", "Usage: /approve <task id> (see /tasks awaiting_approval)."),
    ("/reject  ", "Usage: /reject <task id> [reason] (see /tasks awaiting_approval)."),
])
def test_approve_and_reject_without_an_id_explain_the_usage(rig: Rig, command: str, expected: str) -> None:
    """No id: nothing is decided."""
    assert rig.answer(command) == expected
    assert rig.supervisor.approvals == [] and rig.supervisor.rejections == []


def test_reset_forgets_this_chats_conversation(rig: Rig) -> None:
    """The conversation is this chat's (its `conversation` name); a second reset finds nothing."""
    rig.say("remember the number 7")
    assert rig.answer("/reset") == "Conversation reset: the next message starts afresh."
    assert rig.answer("/reset") == "There was no conversation here to reset."
    assert rig.chat.resets == ["telegram:100", "telegram:100"]


def test_a_chat_turn_is_queued_and_answered_later(rig: Rig) -> None:
    """Plain text goes to the chat with this chat's conversation and where to answer;
    nothing is said now (the answer is the reply)."""
    d = rig.say("why is CI red?", where={"chat_id": "100", "message_id": 7, "_token": "x"})
    assert d.called and rig.bridge().replies == []
    ((message, conversation, priority, source, metadata, reply_to),) = rig.chat.sent
    assert (message, conversation, priority, source) == ("why is CI red?", "telegram:100", None,
                                                         "messaging:telegram")
    assert reply_to == {"platform": "telegram", "chat": "100",
                                   "where": {"chat_id": "100", "message_id": 7}, "kind": "chat"}
    assert metadata["requestedBy"] == {"user": ALICE, "name": "alice"}
    assert rig.supervisor.submitted == []


def test_a_chat_turn_that_must_be_answered_says_it_is_on_its_way(rig: Rig) -> None:
    """An interaction expires unanswered: acknowledge it with the turn's task id."""
    text = rig.answer("", command=Command("chat", "why is CI red?"), must_answer=True)
    assert text == "Asking the agent (task c-1); the answer will follow here."
    assert rig.chat.sent[0][0] == "why is CI red?"


@pytest.mark.parametrize("text, command", [("", None), ("   ", None), ("", Command("chat", ""))])
def test_a_bare_mention_gets_the_help(rig: Rig, text: str, command: Command | None) -> None:
    """`@bot` alone asks nothing: say what the bot can do instead of asking the agent."""
    assert rig.answer(text, command=command) == HELP
    assert rig.chat.sent == []


def test_a_failing_handler_is_answered_not_raised(rig: Rig) -> None:
    """The asker hears that it failed and why; the bridge keeps working."""
    rig.supervisor.refuse_with = RuntimeError("the queue is full (100 tasks)")
    d = rig.say("/task one more")
    assert d.called and d.result is None
    assert rig.bridge().texts() == ["Sorry, that failed: the queue is full (100 tasks)"]
    assert rig.answer("/help") == HELP


# -- results back to the asker ---------------------------------------------------------


def test_a_tasks_result_is_posted_where_it_was_asked(rig: Rig) -> None:
    """The end event of a /task finds the reply address in the task and posts the outcome."""
    rig.say("/task run the tests", chat="100")
    rig.store.end("t-1", TaskState.COMPLETED, result="all 312 passed", started_at=10.0, finished_at=22.5)
    rig.publish("task:completed", taskId="t-1", source="messaging:telegram", state="completed")
    where, text = rig.bridge().replies[-1]
    assert where == {"chat_id": "100", "message_id": 7}
    assert text == "Task t-1 completed in 12.5s:\nall 312 passed"


def test_a_failed_tasks_error_and_output_are_posted(rig: Rig) -> None:
    """A failure says why, with the end of the output."""
    rig.say("/task run the tests")
    rig.store.end("t-1", TaskState.FAILED, error="exit code 2", output_tail="E   assert 1 == 2")
    rig.publish("task:failed", taskId="t-1", source="messaging:telegram")
    assert rig.bridge().texts()[-1] == "Task t-1 failed: exit code 2\nE   assert 1 == 2"


@pytest.mark.parametrize("topic, state, changes, expected", [
    ("task:completed", TaskState.COMPLETED, {"result": "Because the lint step fails."},
     "Because the lint step fails."),
    ("task:completed", TaskState.COMPLETED, {"output_tail": "partial output"}, "partial output"),
    ("task:completed", TaskState.COMPLETED, {}, "(no answer)"),
    ("task:failed", TaskState.FAILED, {"error": "agent crashed"},
     "Sorry, no answer: the agent's task c-1 failed: agent crashed"),
    ("task:timeout", TaskState.TIMEOUT, {}, "Sorry, no answer: the agent's task c-1 timeout."),
])
def test_a_chat_turns_answer_is_the_reply(rig: Rig, topic: str, state: TaskState, changes: dict[str, Any],
                                          expected: str) -> None:
    """A chat answer is just the answer; a turn that did not finish says so."""
    rig.say("why is CI red?")
    rig.store.end("c-1", state, **changes)
    rig.publish(topic, taskId="c-1", source="messaging:telegram")
    assert rig.bridge().replies == [({"chat_id": "100", "message_id": 7}, expected)]


def test_a_result_finds_its_chat_after_a_restart(tmp_path: Path) -> None:
    """The reply address lives in the stored task: a new hub (a restarted daemon) that never
    saw the /task still posts its result there."""
    store = Store()
    before = Rig(tmp_path, store=store).start()
    before.say("/task migrate the database", chat="200", where={"chat_id": "200", "message_id": 55})
    before.stop()
    after = Rig(tmp_path, store=store).start()
    store.end("t-1", TaskState.COMPLETED, result="migrated")
    after.publish("task:completed", taskId="t-1", source="messaging:telegram")
    assert after.bridge().replies == [({"chat_id": "200", "message_id": 55}, "Task t-1 completed:\nmigrated")]
    assert len(before.built[0].replies) == 1  # the old bridge only said "Queued …"
    after.stop()


def test_an_end_event_without_a_stored_task_is_harmless(rig: Rig) -> None:
    """A task pruned from the store (or from another source) gets no reply, and no error."""
    rig.publish("task:completed", taskId="t-gone", source="messaging:telegram")
    rig.publish("task:completed", taskId=None, source="messaging:telegram")
    assert rig.bridge().replies == []
    assert [title for _, title in rig.bridge().titles()] == ["Task t-gone completed"] * 2 + ["task:completed"] * 2


# -- notifications -------------------------------------------------------------------


def test_topics_and_min_severity_decide_what_is_notified(make: Callable[..., Rig]) -> None:
    """Each bridge has its own patterns and threshold."""
    r = make({
        "telegram": telegram(chat_ids=[100], notify={"topics": ["task:*"], "min_severity": "warning"}),
        "slack": slack(channel_ids=["C-ops"], notify={"topics": ["health:*", "task:completed"]}),
    })
    r.publish("task:completed", taskId="t-1", state="completed", source="cli")  # info
    r.publish("task:cancelled", taskId="t-2", source="cli")  # warning
    r.publish("task:failed", taskId="t-3", source="cli")  # error
    r.publish("health:degraded", issues=["disk almost full"])  # error
    r.publish("task:started", taskId="t-4", source="cli")  # info, and slack does not ask for it
    r.publish("daemon:stopping")  # nobody asks for it
    assert r.bridge("telegram").titles() == [("100", "Task t-2 cancelled"), ("100", "Task t-3 failed")]
    assert r.bridge("slack").titles() == [("C-ops", "Task t-1 completed"), ("C-ops", "Daemon health degraded")]
    assert r.hub.status()["notified"] == 4


def test_a_notice_names_the_project(rig: Rig) -> None:
    """Several daemons may post into one chat: each notice says which project."""
    rig.publish("task:failed", taskId="t-3", source="cli", error="boom")
    target, notice = rig.bridge().notices[0]
    assert ("project", "proj") in notice.fields and notice.severity == "error"


def test_task_output_is_never_notified(make: Callable[..., Rig]) -> None:
    """Output chunks are a stream for followers; even `*` does not turn them into messages."""
    r = make({"telegram": telegram(chat_ids=[100], notify={"topics": ["*"]})})
    r.publish("task:output", taskId="t-1", stream="stdout", data="line\n")
    assert r.bridge().notices == []
    r.publish("task:started", taskId="t-1", source="cli")
    assert r.bridge().titles() == [("100", "Task t-1 started")]  # `*` does match everything else
    assert r.hub.notified == 1


def test_chat_events_are_not_notified(make: Callable[..., Rig]) -> None:
    """A chat turn's progress is the asker's business, not the channel's."""
    r = make({"telegram": telegram(chat_ids=[100], notify={"topics": ["*"]})})
    r.publish("task:queued", taskId="c-7", source="chat")
    r.publish("task:completed", taskId="c-7", source="chat", result="secret answer")
    assert r.bridge().notices == [] and r.hub.notified == 0


def test_a_messaging_chat_turn_is_not_notified(make: Callable[..., Rig]) -> None:
    """Asked from a chat app: the answer is a reply, and nobody else hears of the turn."""
    r = make({"telegram": telegram(chat_ids=[100, 200], notify={"topics": ["*"]})})
    r.say("why is CI red?", chat="100")
    r.store.end("c-1", TaskState.COMPLETED, result="lint")
    for topic in ("task:queued", "task:started", "task:completed"):
        r.publish(topic, taskId="c-1", source="messaging:telegram")
    assert r.bridge().notices == [] and r.hub.notified == 0
    assert r.bridge().texts() == ["lint"]


def test_a_tasks_events_skip_the_asking_chat_but_reach_the_others(make: Callable[..., Rig]) -> None:
    """The asker gets the outcome as a reply, once; the other targets (on any platform, even
    one with the same chat id) are notified as usual."""
    r = make({"telegram": telegram(chat_ids=[100, 200], notify={"topics": ["task:*"]}),
                        "slack": slack(channel_ids=["100"], notify={"topics": ["task:*"]})})
    r.say("/task run the tests", chat="100")
    r.publish("task:started", taskId="t-1", source="messaging:telegram")
    r.store.end("t-1", TaskState.COMPLETED, result="green")
    r.publish("task:completed", taskId="t-1", source="messaging:telegram", state="completed")
    assert r.bridge("telegram").titles() == [("200", "Task t-1 started"), ("200", "Task t-1 completed")]
    assert r.bridge("slack").titles() == [("100", "Task t-1 started"), ("100", "Task t-1 completed")]
    assert r.bridge("telegram").texts() == ["Queued task t-1. I will post the result here (or /cancel t-1).",
                                            "Task t-1 completed:\ngreen"]
    assert r.hub.notified == 4


def test_stopping_delivers_pending_events_first(rig: Rig) -> None:
    """Tasks ended by the stop are announced before the bridges go."""
    rig.bus.publish("task:failed", {"taskId": "t-1", "source": "cli", "error": "interrupted"})
    assert rig.bridge().notices == []
    bridge = rig.bridge()
    rig.stop()
    assert bridge.titles() == [("100", "Task t-1 failed"), ("200", "Task t-1 failed")]
    assert bridge.state == "stopped"


def test_send_test_reports_each_target(make: Callable[..., Rig]) -> None:
    """`aiwg messaging test`: every target is tried and reported, a failure with its
    reason (without the secret) and without stopping the others."""
    r = make({"telegram": telegram(chat_ids=[100, 200]), "slack": slack(channel_ids=["C-ops"])})
    r.bridge("telegram").refusing["100"] = "chat not found (token tg-secret-value)"
    results: list[Any] = []
    r.hub.send_test("telegram").addCallback(results.append)
    assert results == [{"telegram": [{"target": "100", "ok": False, "error": "chat not found (token [secret])"},
                                     {"target": "200", "ok": True}]}]
    assert r.bridge("telegram").counters["failed"] == 1 and r.bridge("telegram").counters["sent"] == 1
    assert r.bridge("telegram").notices[0][1].title == "Test notification from aiwg"
    assert r.bridge("slack").notices == []
    r.hub.send_test(None).addCallback(results.append)
    assert sorted(results[1]) == ["slack", "telegram"] and results[1]["slack"] == [{"target": "C-ops", "ok": True}]


# -- status and health ---------------------------------------------------------------


def test_status_shows_each_platform(rig: Rig) -> None:
    """Enabled bridges report their own status; the others are `disabled`."""
    status = rig.hub.status()
    assert status["enabled"] is True and status["notified"] == 0
    assert status["adapters"]["telegram"]["state"] == "starting"
    assert status["adapters"]["telegram"]["mode"] == "2-way"
    assert status["adapters"]["slack"] == {"state": "disabled"}
    assert status["adapters"]["discord"] == {"state": "disabled"}
    assert rig.hub.health_issues() == []


def test_nothing_enabled(make: Callable[..., Rig]) -> None:
    """No bridge: no subscription to the bus, every platform disabled."""
    r = make({})
    assert r.hub.status() == {"enabled": False, "notified": 0,
                              "adapters": {p: {"state": "disabled"} for p in PLATFORMS}}
    assert r.bus.subscriber_count == 0


def test_secrets_are_expanded_from_the_environment(rig: Rig) -> None:
    """The bridge gets the value, never the `${VAR}` reference, and the state directory."""
    assert rig.bridge().secrets == {"bot_token": "tg-secret-value"}
    assert rig.bridge().state_dir == rig.hub.state_dir


def test_a_missing_variable_is_an_error_that_names_it(make: Callable[..., Rig]) -> None:
    """The variable is named so a person can export it; the other bridges still run."""
    r = make({"telegram": telegram(), "slack": slack()},
             environ={"TELEGRAM_BOT_TOKEN": "tg-secret-value", "SLACK_APP_TOKEN": "xapp-value"})
    slack_status = r.hub.status()["adapters"]["slack"]
    assert slack_status["state"] == "error" and "SLACK_BOT_TOKEN" in slack_status["detail"]
    assert "SLACK_APP_TOKEN" not in slack_status["detail"]
    (issue,) = r.hub.health_issues()
    assert "SLACK_BOT_TOKEN" in issue and "messaging.slack" in issue
    assert list(r.hub.adapters) == ["telegram"] and r.bridge().running
    assert r.hub.status()["enabled"] is True


def test_a_bridge_that_cannot_be_built_leaves_the_others(tmp_path: Path) -> None:
    """A factory that raises is reported; the daemon and the other bridges go on."""
    r = Rig(tmp_path, {"telegram": telegram(), "slack": slack()})

    def broken(**kwargs: Any) -> Any:
        raise ValueError("bad api_base_url")

    r.hub.factories["slack"] = broken
    r.start()
    assert r.hub.status()["adapters"]["slack"] == {"state": "error",
                                                   "detail": "messaging: slack: could not start: bad api_base_url"}
    assert r.hub.health_issues() == ["messaging: slack: could not start: bad api_base_url"]
    assert r.bridge("telegram").running
    r.stop()


def test_a_bridge_in_state_error_is_a_health_issue(rig: Rig) -> None:
    """A rejected token shows in the daemon's health, with the bridge's own words."""
    rig.bridge().set_state("error", "Telegram rejected the bot token (Unauthorized)")
    assert rig.hub.health_issues() == ["messaging: telegram: Telegram rejected the bot token (Unauthorized)"]
    assert rig.hub.status()["adapters"]["telegram"]["state"] == "error"


# -- reloading ------------------------------------------------------------------------


def test_a_changed_section_rebuilds_the_bridges(rig: Rig) -> None:
    """New settings take effect: the old bridge stops, a new one runs, notifications
    follow the new topics, and an event is not delivered twice."""
    old = rig.bridge()
    rig.hub.apply_config(Rig.config({"telegram": telegram(chat_ids=[300], notify={"topics": ["health:*"]})}))
    new = rig.bridge()
    assert new is not old and not old.running and old.state == "stopped" and new.running
    assert len(rig.hub.services) == 1
    rig.publish("health:degraded", issues=["x"])
    rig.publish("task:failed", taskId="t-1", source="cli")
    assert new.titles() == [("300", "Daemon health degraded")] and old.notices == []


def test_an_unchanged_section_retries_a_bridge_in_error(rig: Rig) -> None:
    """A reload is how a person says "I fixed it": a failed bridge is built again."""
    old = rig.bridge()
    old.set_state("error", "Telegram rejected the bot token")
    rig.hub.apply_config(Rig.config(None))
    assert rig.bridge() is not old and rig.bridge().state == "starting" and not old.running
    assert rig.hub.health_issues() == []


def test_an_unchanged_healthy_configuration_restarts_nothing(rig: Rig) -> None:
    """A reload for some other section must not drop the bridges' connections."""
    old = rig.bridge()
    assert rig.hub.apply_config(Rig.config(None)) is None
    assert rig.bridge() is old and old.running and len(rig.built) == 1


def test_a_reload_retries_a_bridge_whose_variable_was_missing(make: Callable[..., Rig]) -> None:
    """A bridge that could not be built is retried on reload (here it still cannot be)."""
    r = make({"telegram": telegram()}, environ={})
    assert r.hub.adapters == {} and len(r.hub.health_issues()) == 1
    assert r.hub.apply_config(Rig.config(None)) is not None  # retried
    assert len(r.hub.health_issues()) == 1 and r.built == []


def test_a_retry_on_reload_leaves_healthy_bridges_connected(tmp_path: Path) -> None:
    """Only the failed bridge is rebuilt: the healthy one keeps its connection."""
    r = Rig(tmp_path, {"telegram": telegram(), "slack": slack()})
    r.start()
    healthy, failed = r.bridge("telegram"), r.bridge("slack")
    failed.set_state("error", "Slack rejected a token (invalid_auth)")
    r.hub.apply_config(Rig.config({"telegram": telegram(), "slack": slack()}))
    assert r.bridge("telegram") is healthy and healthy.running
    assert r.bridge("slack") is not failed and not failed.running
    r.stop()
