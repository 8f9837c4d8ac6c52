"""The Discord gateway state machine on a Clock, frames fed by hand (no network):
identify and resume, heartbeats and zombie detection, the server's reconnect and
invalid-session requests, and which messages and commands reach the hub."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from twisted.internet.task import Clock

from aiwg.core import config
from aiwg.core.messaging import Command, Inbound
from aiwg.daemon.messaging.discord import DiscordAdapter

BOT_ID = "900"
TOKEN = "tok"


class Proto:
    """Records what the adapter does to its websocket."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closes: list[int] = []
        self.dropped: list[bool] = []

    def sendMessage(self, payload: bytes) -> None:
        self.sent.append(json.loads(payload))

    def sendClose(self, code: int) -> None:
        self.closes.append(code)

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped.append(abort)

    def ops(self) -> list[int]:
        return [frame["op"] for frame in self.sent]


class Gateway:
    def __init__(self) -> None:
        self.clock = Clock()
        self.received: list[Inbound] = []
        section = config.defaults()["messaging"]["discord"]
        section.update(enabled=True, bot_token="${DISCORD_BOT_TOKEN}", channel_ids=["C-notify"])
        self.adapter = DiscordAdapter(reactor=self.clock, section=section, secrets={"bot_token": TOKEN},
                                      inbound=self.received.append, api=object(), rand=lambda: 0.5)
        self.adapter.running = True  # as if started, without the network loop
        self.proto = Proto()

    def frame(self, op: int, d: Any = None, s: int | None = None, t: str | None = None,
              proto: Proto | None = None) -> None:
        self.adapter._frame(proto or self.proto, json.dumps({"op": op, "d": d, "s": s, "t": t}).encode())

    def hello(self, interval_ms: int = 1000, proto: Proto | None = None) -> None:
        self.frame(10, {"heartbeat_interval": interval_ms}, proto=proto)

    def ready(self, seq: int = 1) -> None:
        self.frame(0, {"session_id": "sess-1", "resume_gateway_url": "wss://resume.test",
                       "user": {"id": BOT_ID, "username": "aiwg", "bot": True}}, s=seq, t="READY")

    def message(self, seq: int = 2, **fields: Any) -> None:
        d = {"id": "m-1", "channel_id": "C1", "content": "hello",
             "author": {"id": "42", "username": "alice"}, **fields}
        self.frame(0, d, s=seq, t="MESSAGE_CREATE")


@pytest.fixture
def gw() -> Iterator[Gateway]:
    gateway = Gateway()
    yield gateway
    gateway.adapter._stop_heartbeat()
    assert gateway.clock.getDelayedCalls() == []


def test_hello_identifies_with_the_token_and_message_content_intent(gw: Gateway) -> None:
    """A fresh connection identifies; without MESSAGE_CONTENT every message arrives empty."""
    gw.hello()
    (identify,) = gw.proto.sent
    assert identify["op"] == 2
    assert identify["d"]["token"] == TOKEN
    assert identify["d"]["intents"] & (1 << 15)  # MESSAGE_CONTENT
    assert identify["d"]["intents"] & (1 << 9) and identify["d"]["intents"] & (1 << 12)  # guild and direct messages


def test_heartbeats_are_jittered_then_regular_with_the_last_sequence(gw: Gateway) -> None:
    """First beat after interval × random (0.5 here), then one per interval while ACKs come."""
    gw.hello(1000)
    gw.ready(seq=1)
    gw.clock.advance(0.49)
    assert gw.proto.ops() == [2]
    gw.clock.advance(0.01)
    assert gw.proto.sent[-1] == {"op": 1, "d": 1}
    gw.frame(11)
    gw.message(seq=2)
    gw.clock.advance(0.99)
    assert gw.proto.ops() == [2, 1]
    gw.clock.advance(0.01)
    assert gw.proto.sent[-1] == {"op": 1, "d": 2}
    for _ in range(3):
        gw.frame(11)
        gw.clock.advance(1)
    assert gw.proto.ops() == [2, 1, 1, 1, 1, 1] and gw.proto.dropped == []


def test_a_missing_ack_means_a_zombie_connection_is_dropped(gw: Gateway) -> None:
    """No ACK by the next beat: abort the connection (1006 keeps the session resumable)."""
    gw.hello(1000)
    gw.clock.advance(0.5)
    assert gw.proto.ops() == [2, 1]
    gw.clock.advance(1)  # no op 11 came
    assert gw.proto.dropped == [True]
    assert gw.proto.ops() == [2, 1]  # no heartbeat into a dead socket
    assert gw.clock.getDelayedCalls() == []  # and no more beats scheduled
    assert gw.proto.closes == []


def test_after_ready_a_new_hello_resumes_instead_of_identifying(gw: Gateway) -> None:
    """A reconnect resumes with the session id and sequence so no message is lost."""
    gw.hello()
    gw.ready(seq=1)
    assert gw.adapter.state == "connected" and gw.adapter.bot_id == BOT_ID
    assert gw.adapter.resume_url == "wss://resume.test"
    gw.message(seq=5)
    second = Proto()
    gw.hello(proto=second)
    assert second.sent == [{"op": 6, "d": {"token": TOKEN, "session_id": "sess-1", "seq": 5}}]
    gw.frame(0, {}, s=6, t="RESUMED", proto=second)
    assert gw.adapter.state == "connected" and gw.adapter.detail == "resumed"


def test_a_new_hello_restarts_the_heartbeat(gw: Gateway) -> None:
    """Only one heartbeat timer, on the newest connection."""
    gw.hello(1000)
    second = Proto()
    gw.hello(5000, proto=second)
    assert len(gw.clock.getDelayedCalls()) == 1
    gw.clock.advance(2.5)
    assert gw.proto.ops() == [2] and second.ops() == [2, 1]


def test_the_server_asking_for_a_heartbeat_gets_one_at_once(gw: Gateway) -> None:
    """Op 1 from Discord is answered immediately, with the last sequence."""
    gw.hello()
    gw.ready(seq=3)
    gw.frame(1)
    assert gw.proto.sent[-1] == {"op": 1, "d": 3}
    assert gw.clock.seconds() == 0


def test_reconnect_request_closes_resumably(gw: Gateway) -> None:
    """Op 7: close with a non-1000 code so the session survives."""
    gw.hello()
    gw.ready()
    gw.frame(7)
    assert gw.proto.closes == [4000] and gw.adapter.session_id == "sess-1"


def test_invalid_session_not_resumable_forgets_the_session(gw: Gateway) -> None:
    """Op 9 d=false: identify afresh next time; a clean 1000 close ends the old session."""
    gw.hello()
    gw.ready(seq=4)
    gw.frame(9, False)
    assert gw.proto.closes == [1000]
    assert gw.adapter.session_id is None and gw.adapter.seq is None and gw.adapter.resume_url is None
    fresh = Proto()
    gw.hello(proto=fresh)
    assert fresh.ops() == [2]


def test_invalid_session_resumable_keeps_the_session(gw: Gateway) -> None:
    """Op 9 d=true: close resumably and resume on the next connection."""
    gw.hello()
    gw.ready(seq=4)
    gw.frame(9, True)
    assert gw.proto.closes == [4000] and gw.adapter.session_id == "sess-1" and gw.adapter.seq == 4
    again = Proto()
    gw.hello(proto=again)
    assert again.ops() == [6]


def test_junk_frames_are_ignored(gw: Gateway) -> None:
    """A frame that is not a JSON object changes nothing."""
    gw.adapter._frame(gw.proto, b"not json")
    gw.adapter._frame(gw.proto, b"[1, 2]")
    gw.frame(0, {"x": 1}, s=None, t="SOMETHING_NEW")
    assert gw.proto.sent == [] and gw.received == [] and gw.adapter.seq is None


@pytest.mark.parametrize(
    "fields",
    [
        {"author": {"id": BOT_ID, "username": "aiwg"}},  # the bot itself
        {"author": {"id": "77", "username": "other-bot", "bot": True}},  # another bot
        {"guild_id": "G1", "content": "just chatting", "mentions": []},  # a guild message not for us
        {"guild_id": "G1", "content": "hey <@55>", "mentions": [{"id": "55"}]},  # mentions someone else
    ],
)
def test_messages_not_for_the_bot_are_ignored(gw: Gateway, fields: dict) -> None:
    """Bots never answer bots (no loops), and a guild's chatter is not addressed to us."""
    gw.hello()
    gw.ready()
    gw.message(**fields)
    assert gw.received == []
    assert gw.adapter.seq == 2  # the sequence still advances


def test_a_direct_message_reaches_the_hub(gw: Gateway) -> None:
    """A DM (no guild) needs no mention; the reply address is the channel and message."""
    gw.hello()
    gw.ready()
    gw.message(id="m-7", channel_id="D9", content="what is failing?")
    assert gw.received == [Inbound(platform="discord", user="42", chat="D9", text="what is failing?",
                                   where={"channel_id": "D9", "message_id": "m-7"},
                                   conversation="discord:D9", user_name="alice")]


@pytest.mark.parametrize("mention", [f"<@{BOT_ID}>", f"<@!{BOT_ID}>"])
def test_a_mention_in_a_guild_reaches_the_hub_without_the_mention(gw: Gateway, mention: str) -> None:
    """The mention addresses the bot; it is not part of the question."""
    gw.hello()
    gw.ready()
    gw.message(guild_id="G1", channel_id="C5", content=f"{mention} /tasks failed",
               mentions=[{"id": BOT_ID}])
    (inbound,) = gw.received
    assert inbound.text == "/tasks failed"
    assert inbound.where == {"channel_id": "C5", "message_id": "m-1"}
    assert inbound.conversation == "discord:C5" and inbound.command is None and not inbound.must_answer


def interaction(name: str, *values: str, user: dict | None = None, **extra: Any) -> dict[str, Any]:
    d = {"id": "i-1", "token": "interaction-token", "type": 2, "channel_id": "C3",
         "data": {"name": name, "options": [{"name": "text", "type": 3, "value": v} for v in values]},
         **extra}
    d.update(user if user is not None else {"member": {"user": {"id": "42", "username": "alice"}}})
    return d


def test_a_slash_command_becomes_a_command_that_must_be_answered(gw: Gateway) -> None:
    """/task <prompt>: the command as given, answered through its interaction."""
    gw.hello()
    gw.ready()
    gw.frame(0, interaction("task", "fix the flaky test"), s=2, t="INTERACTION_CREATE")
    (inbound,) = gw.received
    assert inbound.command == Command("task", "fix the flaky test")
    assert inbound.must_answer is True
    assert inbound.where["channel_id"] == "C3"
    assert inbound.where["_interaction"] == {"id": "i-1", "token": "interaction-token"}
    assert inbound.user == "42" and inbound.user_name == "alice" and inbound.conversation == "discord:C3"


def test_the_umbrella_command_with_free_text_is_chat(gw: Gateway) -> None:
    """/aiwg text:<…>: a known word is that command, anything else a chat turn."""
    gw.hello()
    gw.ready()
    gw.frame(0, interaction("aiwg", "why is CI red?"), s=2, t="INTERACTION_CREATE")
    gw.frame(0, interaction("aiwg", "tasks failed", user={"user": {"id": "43", "username": "bob"}}),
             s=3, t="INTERACTION_CREATE")
    gw.frame(0, interaction("aiwg"), s=4, t="INTERACTION_CREATE")
    assert [m.command for m in gw.received] == [Command("chat", "why is CI red?"), Command("tasks", "failed"),
                                                Command("help")]
    assert gw.received[1].user == "43"  # a DM interaction carries `user`, not `member`
    assert all(m.must_answer for m in gw.received)


def test_other_interaction_types_are_ignored(gw: Gateway) -> None:
    """Only application commands (type 2); a ping or a button is not ours."""
    gw.hello()
    gw.ready()
    gw.frame(0, {**interaction("status"), "type": 3}, s=2, t="INTERACTION_CREATE")
    assert gw.received == []


def test_notifications_go_to_the_configured_channels(gw: Gateway) -> None:
    """With a bot token the targets are the channel ids, and the bridge listens."""
    assert gw.adapter.notice_targets() == ["C-notify"]
    assert gw.adapter.listens() and gw.adapter.status()["mode"] == "2-way"
