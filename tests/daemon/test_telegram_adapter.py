"""The Telegram bridge's poll loop on a Clock, with an API stub whose answers the test
gives by hand (no network): the offset saved before updates are handled and kept per
bot, which messages reach the hub, and how 409, 401 and network errors are waited out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from aiwg.core import config
from aiwg.core.backoff import Backoff
from aiwg.core.messaging import Command, Inbound
from aiwg.daemon.messaging.telegram import CONFLICT_QUIET, TelegramAdapter
from aiwg.daemon.messaging.telegram_api import TelegramError

BOT_ID = 4242
BOT_NAME = "aiwgbot"
TOKEN = "4242:AAE-telegram-secret"
ALICE = {"id": 42, "is_bot": False, "username": "alice", "first_name": "Alice"}


class StubApi:
    """Every call returns a Deferred the test fires; what was asked is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], Deferred]] = []
        self.polls: list[tuple[int | None, int, Deferred]] = []
        self.sent: list[tuple[Any, str, dict[str, Any]]] = []
        self.closed = 0
        self.cancelled: list[Deferred] = []

    def call(self, method: str, params: dict[str, Any]) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((method, params, d))
        return d

    def get_updates(self, offset: int | None, timeout: int) -> Deferred:
        d: Deferred = Deferred(canceller=self.cancelled.append)
        self.polls.append((offset, timeout, d))
        return d

    def send_message(self, chat_id: Any, text: str, **options: Any) -> Deferred:
        self.sent.append((chat_id, text, options))
        return succeed([{"message_id": 1}])

    def close(self) -> Deferred:
        self.closed += 1
        return succeed(None)

    def poll(self) -> Deferred:
        """The request being held open right now."""
        offset, timeout, d = self.polls[-1]
        assert not d.called, "no poll is pending"
        return d


class Bridge:
    def __init__(self, state_dir: Path, inbound: Callable[[Inbound], Any] | None = None) -> None:
        self.clock = Clock()
        self.api = StubApi()
        self.received: list[Inbound] = []
        section = config.defaults()["messaging"]["telegram"]
        section.update(enabled=True, bot_token="${TELEGRAM_BOT_TOKEN}", chat_ids=[100], poll_timeout_seconds=25)
        self.adapter = TelegramAdapter(
            reactor=self.clock, section=section, secrets={"bot_token": TOKEN},
            inbound=inbound or self.received.append, api=self.api, state_dir=state_dir,
            backoff=Backoff(base=1.0, cap=300.0, rand=lambda: 1.0))
        # Deterministic jitter: each conflict wait is the top of its range (5, 10, 20 … s).
        self.adapter._conflicts = Backoff(base=5.0, cap=300.0, rand=lambda: 1.0)

    def start(self, bot_id: int = BOT_ID, username: str = BOT_NAME) -> None:
        """Start and answer getMe: the first long poll is then pending."""
        self.adapter.startService()
        method, _, d = self.api.calls[-1]
        assert method == "getMe"
        d.callback({"id": bot_id, "is_bot": True, "username": username})

    def deliver(self, *updates: dict[str, Any]) -> None:
        self.api.poll().callback(list(updates))

    def fail(self, status: int, description: str = "nope", retry_after: float | None = None) -> None:
        self.api.poll().errback(TelegramError(status, description, retry_after))

    def stop(self) -> Deferred:
        return self.adapter.stopService()


def update(update_id: int, text: Any = "hello", *, chat: dict[str, Any] | None = None,
           sender: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    message = {"message_id": update_id * 10, "from": sender or ALICE,
               "chat": chat or {"id": 42, "type": "private"}, "text": text, **fields}
    if text is None:
        del message["text"]
    return {"update_id": update_id, "message": message}


GROUP = {"id": -1001, "type": "supergroup", "title": "team"}


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    b = Bridge(tmp_path)
    yield b
    if b.adapter.running:
        assert b.stop().called
    assert b.clock.getDelayedCalls() == []


# -- the offset -------------------------------------------------------------------


def test_the_offset_is_on_disk_before_any_update_is_handled(tmp_path: Path) -> None:
    """A daemon killed while handling a batch must not run that batch's /task again."""
    offset_file = tmp_path / "telegram.json"
    on_disk: list[Any] = []
    b = Bridge(tmp_path, inbound=lambda message: on_disk.append(json.loads(offset_file.read_text())))
    b.start()
    assert b.api.polls[0][:2] == (None, 25)  # nothing saved yet: no offset
    b.deliver(update(7, "/status"), update(9, "/tasks"))
    assert on_disk == [{"bot": BOT_ID, "offset": 10}, {"bot": BOT_ID, "offset": 10}]
    assert b.api.polls[-1][0] == 10  # the next request confirms both
    assert b.stop().called


def test_a_new_adapter_for_the_same_bot_resumes_from_the_saved_offset(tmp_path: Path) -> None:
    """After a restart the updates already taken are not fetched again."""
    first = Bridge(tmp_path)
    first.start()
    first.deliver(update(31))
    assert first.stop().called
    again = Bridge(tmp_path)
    again.start()
    assert again.api.polls[0][0] == 32
    assert again.stop().called


def test_the_saved_offset_of_another_bot_is_not_used(tmp_path: Path) -> None:
    """A new token means another bot: its update ids have nothing to do with the old ones."""
    first = Bridge(tmp_path)
    first.start()
    first.deliver(update(31))
    assert first.stop().called
    other = Bridge(tmp_path)
    other.start(bot_id=5151, username="otherbot")
    assert other.api.polls[0][0] is None
    other.deliver(update(3))
    assert json.loads((tmp_path / "telegram.json").read_text()) == {"bot": 5151, "offset": 4}
    assert other.stop().called


def test_updates_that_are_ignored_still_move_the_offset(bridge: Bridge) -> None:
    """A photo or an edit is skipped, but must not come back in every poll."""
    bridge.start()
    bridge.deliver(update(5, None, photo=[{"file_id": "x"}]), {"update_id": 6, "edited_message": {"text": "x"}})
    assert bridge.received == [] and bridge.api.polls[-1][0] == 7


def test_an_unreadable_offset_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    """A torn or hand-edited file must not stop the bridge; the next batch rewrites it."""
    (tmp_path / "telegram.json").write_text("{not json")
    b = Bridge(tmp_path)
    b.start()
    assert b.api.polls[0][0] is None
    b.deliver(update(12))
    assert json.loads((tmp_path / "telegram.json").read_text()) == {"bot": BOT_ID, "offset": 13}
    assert b.stop().called


# -- which messages reach the hub -----------------------------------------------------


def test_every_private_message_reaches_the_hub(bridge: Bridge) -> None:
    """In a private chat everything is addressed to the bot; the reply quotes the message."""
    bridge.start()
    bridge.deliver(update(1, "why is CI red?"), update(2, "/tasks failed"))
    assert bridge.received == [
        Inbound(platform="telegram", user="42", chat="42", text="why is CI red?",
                where={"chat_id": 42, "message_id": 10}, conversation="telegram:42", user_name="alice"),
        Inbound(platform="telegram", user="42", chat="42", text="/tasks failed",
                where={"chat_id": 42, "message_id": 20}, conversation="telegram:42", user_name="alice"),
    ]
    assert bridge.adapter.state == "connected" and bridge.adapter.detail == f"as @{BOT_NAME}"


def test_start_arrives_as_help(bridge: Bridge) -> None:
    """Pressing Start sends /start: the answer should say what the bot can do."""
    bridge.start()
    bridge.deliver(update(1, "/start"))
    (inbound,) = bridge.received
    assert inbound.command == Command("help")


@pytest.mark.parametrize("message", [
    update(1, "/status", chat=GROUP),
    update(1, f"/status@{BOT_NAME}", chat=GROUP),
    update(1, f"/status@{BOT_NAME.upper()}", chat=GROUP),
])
def test_commands_in_a_group_reach_the_hub(bridge: Bridge, message: dict[str, Any]) -> None:
    """A command is meant for bots, bare or addressed to this one; the text goes on as is."""
    bridge.start()
    bridge.deliver(message)
    (inbound,) = bridge.received
    assert inbound.text == message["message"]["text"] and inbound.command is None
    assert inbound.chat == "-1001" and inbound.conversation == "telegram:-1001"


def test_a_mention_in_a_group_reaches_the_hub_without_the_mention(bridge: Bridge) -> None:
    """`@bot what failed?` is a question; the mention is not part of it."""
    bridge.start()
    bridge.deliver(update(1, f"@{BOT_NAME} what failed?", chat=GROUP),
                   update(2, f"@{BOT_NAME.upper()}", chat=GROUP))
    assert [m.text for m in bridge.received] == ["what failed?", ""]  # empty: the hub answers with help


def test_a_reply_to_the_bots_message_in_a_group_reaches_the_hub(bridge: Bridge) -> None:
    """Answering the bot's message continues the conversation without a mention."""
    bridge.start()
    bridge.deliver(update(1, "and the other one?", chat=GROUP,
                          reply_to_message={"message_id": 3, "from": {"id": BOT_ID, "is_bot": True}}))
    (inbound,) = bridge.received
    assert inbound.text == "and the other one?" and inbound.where == {"chat_id": -1001, "message_id": 10}


@pytest.mark.parametrize("message", [
    update(1, "just chatting", chat=GROUP),
    update(1, "@alice look at this", chat=GROUP),
    update(1, "answering alice", chat=GROUP, reply_to_message={"message_id": 3, "from": ALICE}),
    update(1, "/status@otherbot", chat=GROUP),
    update(1, "/status@otherbot"),  # even in private: it names another bot
])
def test_group_chatter_and_other_bots_commands_are_ignored(bridge: Bridge, message: dict[str, Any]) -> None:
    """In a group only what is addressed to this bot counts."""
    bridge.start()
    bridge.deliver(message)
    assert bridge.received == []


def test_a_mention_of_a_bot_whose_name_starts_with_ours_is_ignored(bridge: Bridge) -> None:
    """Two bots (prod and staging) in one group: a question for one is not for the other."""
    bridge.start()
    bridge.deliver(update(1, f"@{BOT_NAME}_staging_bot deploy please", chat=GROUP))
    assert bridge.received == []


def test_messages_from_bots_and_without_text_are_ignored(bridge: Bridge) -> None:
    """Bots never answer bots (no loops); stickers and photos carry no question."""
    bridge.start()
    bridge.deliver(update(1, "/status", sender={"id": 77, "is_bot": True, "username": "ci_bot"}),
                   update(2, None, sticker={"file_id": "s"}),
                   update(3, 12345),
                   {"update_id": 4, "channel_post": {"text": "/status", "chat": GROUP}})
    assert bridge.received == []


def test_a_forum_topic_is_its_own_conversation(bridge: Bridge) -> None:
    """Topics in a forum group are separate threads; the answer goes to the same topic."""
    bridge.start()
    bridge.deliver(update(1, "/status", chat=GROUP, is_topic_message=True, message_thread_id=8))
    (inbound,) = bridge.received
    assert inbound.where == {"chat_id": -1001, "message_id": 10, "thread": 8}
    assert inbound.conversation == "telegram:-1001:8"


# -- errors -------------------------------------------------------------------------


def test_a_conflict_waits_longer_each_time_even_with_successful_polls_between(bridge: Bridge) -> None:
    """Two pollers on one token take turns succeeding; only the conflicts' own count
    decides the wait, so the pair backs off instead of fighting every few seconds."""
    bridge.start()
    waits = []
    for _ in range(3):
        bridge.fail(409, "Conflict: terminated by other getUpdates request")
        status = bridge.adapter.status()
        assert status["state"] == "error" and "another process is polling" in status["detail"]
        waits.append(status["nextAttemptIn"])
        polls = len(bridge.api.polls)
        bridge.clock.advance(waits[-1] - 0.1)
        assert len(bridge.api.polls) == polls  # not a moment early
        bridge.clock.advance(0.1)
        assert len(bridge.api.polls) == polls + 1
        bridge.deliver()  # the other poller is between requests: this one succeeds
        assert bridge.adapter.state == "connected"
    assert waits == [5, 10, 20]
    assert bridge.adapter.counters["reconnects"] == 3


def test_the_conflict_wait_starts_over_after_a_quiet_period(bridge: Bridge) -> None:
    """The other poller went away long ago: a new conflict is a new story."""
    bridge.start()
    bridge.fail(409, "Conflict")  # at 0 s: wait 5 s
    bridge.clock.advance(5)
    bridge.fail(409, "Conflict")  # at 5 s: wait 10 s
    bridge.clock.advance(10)
    bridge.clock.advance(CONFLICT_QUIET - 10)  # 600 s after the last conflict: not yet quiet
    bridge.fail(409, "Conflict")
    assert bridge.adapter.status()["nextAttemptIn"] == 20
    bridge.clock.advance(20)
    bridge.deliver()
    bridge.clock.advance(CONFLICT_QUIET - 20 + 1)  # just over CONFLICT_QUIET since the last one
    bridge.fail(409, "Conflict")
    assert bridge.adapter.status()["nextAttemptIn"] == 5


def test_a_rejected_token_is_an_error_that_names_the_setting(bridge: Bridge) -> None:
    """A person must fix the token; the status says which key, and it is retried."""
    bridge.adapter.startService()
    method, _, d = bridge.api.calls[0]
    d.errback(TelegramError(401, "Unauthorized"))
    status = bridge.adapter.status()
    assert status["state"] == "error"
    assert "messaging.telegram.bot_token" in status["detail"] and "Unauthorized" in status["detail"]
    assert status["nextAttemptIn"] == 1
    assert bridge.api.polls == []
    bridge.clock.advance(1)
    assert [c[0] for c in bridge.api.calls] == ["getMe", "getMe"]


def test_a_network_error_reconnects_after_the_backoff(bridge: Bridge) -> None:
    """A dropped connection is passing: state `reconnecting` with the time to the retry,
    which asks for the same offset again."""
    bridge.start()
    bridge.deliver(update(3))
    bridge.fail(0, "ConnectionRefusedError: connection refused")
    status = bridge.adapter.status()
    assert status["state"] == "reconnecting" and status["nextAttemptIn"] == 1
    assert status["detail"] == "ConnectionRefusedError: connection refused"
    bridge.clock.advance(0.9)
    assert len(bridge.api.polls) == 2
    bridge.clock.advance(0.1)
    assert len(bridge.api.polls) == 3 and bridge.api.polls[-1][0] == 4
    bridge.fail(0, "ConnectionRefusedError: connection refused")
    assert bridge.adapter.status()["nextAttemptIn"] == 2  # growing
    bridge.clock.advance(2)
    bridge.deliver()
    status = bridge.adapter.status()
    assert status["state"] == "connected" and "nextAttemptIn" not in status


def test_a_rate_limit_waits_as_long_as_telegram_asks(bridge: Bridge) -> None:
    """429 with retry_after: the server's wait wins over the shorter backoff, and it is counted."""
    bridge.start()
    bridge.fail(429, "Too Many Requests: retry after 30", retry_after=30)
    status = bridge.adapter.status()
    assert status["state"] == "reconnecting" and status["detail"].startswith("rate limited:")
    assert status["nextAttemptIn"] == 30 and status["rate_limited"] == 1
    bridge.clock.advance(29.9)
    assert len(bridge.api.polls) == 1
    bridge.clock.advance(0.1)
    assert len(bridge.api.polls) == 2


def test_a_malformed_answer_is_retried_like_a_network_error(bridge: Bridge) -> None:
    """An update without an id must not end the poll loop."""
    bridge.start()
    bridge.deliver({"message": {"text": "no id"}})
    assert bridge.adapter.state == "reconnecting" and "KeyError" in bridge.adapter.detail
    bridge.clock.advance(1)
    assert len(bridge.api.polls) == 2


# -- stopping -------------------------------------------------------------------------


def test_stop_cancels_the_pending_poll_and_leaves_no_timer(bridge: Bridge) -> None:
    """The held-open request is abandoned at once; the API's connections are closed."""
    bridge.start()
    pending = bridge.api.poll()
    stopping = bridge.stop()
    assert stopping.called and bridge.adapter.state == "stopped"
    assert bridge.api.cancelled == [pending]
    assert bridge.api.closed == 1 and bridge.clock.getDelayedCalls() == []
    assert len(bridge.api.polls) == 1


def test_stop_before_the_bot_is_known(bridge: Bridge) -> None:
    """Stopping while getMe is outstanding ends the loop too; nothing is polled afterwards."""
    bridge.adapter.startService()
    (_, _, get_me), = bridge.api.calls
    assert bridge.stop().called and get_me.called
    assert bridge.api.polls == [] and bridge.adapter.state == "stopped"


def test_stop_during_a_backoff_wait_cancels_the_timer(bridge: Bridge) -> None:
    """A retry timer must not outlive the service and poll a stopped bridge."""
    bridge.start()
    bridge.fail(502, "Bad Gateway")
    assert len(bridge.clock.getDelayedCalls()) == 1
    assert bridge.stop().called
    assert bridge.clock.getDelayedCalls() == []
    bridge.clock.advance(600)
    assert len(bridge.api.polls) == 1
