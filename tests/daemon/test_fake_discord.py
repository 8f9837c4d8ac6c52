"""The loopback Discord fake itself, driven with treq and an autobahn client: auth, message
and embed limits, webhooks, rate-limit buckets, the gateway handshake, resume and the
close codes a bridge must not retry."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool

from tests.fakes.discord import DIRECT_MESSAGES, GUILD_MESSAGES, MESSAGE_CONTENT, FakeDiscord

TOKEN = "MTIz.fake.bot-token"
AUTH = {"Authorization": f"Bot {TOKEN}"}
WAIT = 2.0  # the longest any single step may take


class Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.waiting: Deferred[dict[str, Any]] | None = None
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append(json.loads(payload))
        if self.waiting is not None and not self.waiting.called:
            waiting, self.waiting = self.waiting, None
            waiting.callback(self.frames.pop(0))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback(code)

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.factory.lost.callback(None)

    def send(self, op: int, d: Any) -> None:
        self.sendMessage(json.dumps({"op": op, "d": d}).encode())


FACTORIES: list[WebSocketClientFactory] = []


async def connect(fake: FakeDiscord, url: str | None = None) -> Client:
    factory = WebSocketClientFactory(url or fake.gateway_url)
    factory.protocol = Client
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0,
                               serverConnectionDropTimeout=0)
    factory.opened, factory.closed, factory.lost = Deferred(), Deferred(), Deferred()
    FACTORIES.append(factory)
    reactor.connectTCP("127.0.0.1", factory.port, factory)
    return await factory.opened.addTimeout(WAIT, reactor)


async def next_frame(client: Client) -> dict[str, Any]:
    if client.frames:
        return client.frames.pop(0)
    client.waiting = Deferred()
    return await client.waiting.addTimeout(WAIT, reactor)


async def until(predicate: Any) -> None:
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"not within {WAIT}s: {predicate}")


async def identify(client: Client, intents: int, token: str = TOKEN) -> None:
    client.send(2, {"token": token, "intents": intents,
                    "properties": {"os": "linux", "browser": "aiwg", "device": "aiwg"}})


@pytest_twisted.async_yield_fixture
async def fake() -> Any:
    server = FakeDiscord(TOKEN, heartbeat_interval_ms=5000)
    server.listen()
    yield server
    await server.stop()
    while FACTORIES:
        factory = FACTORIES.pop()
        if factory.opened.called:
            await factory.lost


@pytest_twisted.async_yield_fixture
async def http() -> Any:
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield treq.client.HTTPClient(Agent(reactor, pool=pool))
    await pool.closeCachedConnections()


async def post(http: Any, url: str, body: Any, headers: dict[str, str] | None = None) -> tuple:
    response = await http.post(url, json=body, headers=AUTH if headers is None else headers)
    text = await response.content()
    return response.code, (json.loads(text) if text else None), response.headers


def header(headers: Any, name: str) -> str:
    return headers.getRawHeaders(name)[0]


@pytest_twisted.ensureDeferred
async def test_auth_and_message_limits(fake: FakeDiscord, http: Any) -> None:
    messages = f"{fake.api_base_url}/channels/555/messages"
    code, body, headers = await post(http, messages, {"content": "hi"}, headers={})
    assert (code, body) == (401, {"message": "401: Unauthorized", "code": 0})
    assert header(headers, "X-RateLimit-Bucket")

    response = await http.get(f"{fake.api_base_url}/gateway/bot", headers=AUTH)
    gateway = await response.json()
    assert gateway["url"].startswith("ws://127.0.0.1:") and gateway["shards"] == 1
    response = await http.get(f"{fake.api_base_url}/users/@me", headers=AUTH)
    assert (await response.json())["id"] == "900"

    code, body, _ = await post(http, messages, {"content": "x" * 2001})
    assert code == 400 and body["code"] == 50035 and "content" in body["errors"]
    code, body, _ = await post(http, messages, {"content": "  "})
    assert (code, body["code"]) == (400, 50006)
    code, body, _ = await post(http, messages, {"embeds": [{"title": "t" * 257}]})
    assert "title" in body["errors"]["embeds"]["0"]
    code, body, _ = await post(http, messages, {"embeds": [{"description": "d"}] * 11})
    assert code == 400 and "embeds" in body["errors"]
    fields = [{"name": "n", "value": "v" * 1000}] * 7  # each fine, 7,007 characters together
    code, body, _ = await post(http, messages, {"embeds": [{"fields": fields}]})
    assert code == 400
    assert body["errors"]["embeds"]["_errors"][0]["code"] == "MAX_EMBED_SIZE_EXCEEDED"
    assert fake.messages == []

    code, first, _ = await post(http, messages, {"content": "ok", "embeds": [{"title": "T"}]})
    reply = {"content": "reply", "message_reference": {"message_id": first["id"]}}
    code2, second, _ = await post(http, messages, reply)
    assert code == code2 == 200 and int(second["id"]) > int(first["id"])
    assert first["author"]["id"] == "900" and first["channel_id"] == "555"
    assert second["message_reference"]["message_id"] == first["id"]
    assert fake.messages[0] == {"channel_id": "555", "content": "ok", "embeds": [{"title": "T"}]}


@pytest_twisted.ensureDeferred
async def test_webhook_is_204_unless_waited_for(fake: FakeDiscord, http: Any) -> None:
    code, body, _ = await post(http, fake.webhook_url, {"content": "note"}, headers={})
    assert (code, body) == (204, None)
    code, body, _ = await post(http, fake.webhook_url + "?wait=true", {"content": "again"},
                               headers={})
    assert code == 200 and body["content"] == "again" and body["webhook_id"] == "123"
    code, body, _ = await post(http, f"{fake.base_url}/api/webhooks/123/wrong", {"content": "x"},
                               headers={})
    assert (code, body["code"]) == (404, 10015)
    assert [m["content"] for m in fake.webhook_messages] == ["note", "again"]


@pytest_twisted.ensureDeferred
async def test_bucket_limit_answers_429_with_retry_after(fake: FakeDiscord, http: Any) -> None:
    fake.set_limit("channel_messages", limit=2, window=1.0)
    url = f"{fake.api_base_url}/channels/555/messages"
    answers = [await post(http, url, {"content": str(i)}) for i in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert [header(a[2], "X-RateLimit-Remaining") for a in answers[:2]] == ["1", "0"]
    code, body, headers = answers[2]
    assert body["message"] == "You are being rate limited." and body["global"] is False
    assert 0 < body["retry_after"] <= 1.0 and header(headers, "Retry-After") == "1"
    assert header(headers, "X-RateLimit-Scope") == "user" and fake.rate_limited == 1
    other_channel = f"{fake.api_base_url}/channels/556/messages"
    assert (await post(http, other_channel, {"content": "x"}))[0] == 200  # its own count

    fake.fail_next("channel_messages", 429, retry_after=0.5, global_=True)
    code, body, headers = await post(http, f"{fake.api_base_url}/channels/557/messages",
                                     {"content": "x"})
    assert code == 429 and body["global"] is True and body["retry_after"] == 0.5
    assert header(headers, "X-RateLimit-Global") == "true"


@pytest_twisted.ensureDeferred
async def test_hello_identify_ready_and_heartbeat_ack(fake: FakeDiscord) -> None:
    client = await connect(fake)
    hello = await next_frame(client)
    assert hello["op"] == 10 and hello["d"] == {"heartbeat_interval": 5000}
    client.send(1, None)
    assert (await next_frame(client))["op"] == 11
    await identify(client, GUILD_MESSAGES | DIRECT_MESSAGES)
    ready = await next_frame(client)
    assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
    assert ready["d"]["user"]["id"] == "900" and ready["d"]["session_id"]
    assert ready["d"]["resume_gateway_url"] == fake.gateway_url.split("/?")[0]
    await fake.wait_ready(1)

    fake.zombie = True
    client.send(1, 1)
    await until(lambda: fake.heartbeats == 2)
    sent = fake.message_create("secret", guild_id="42")  # no MESSAGE_CONTENT intent
    event = await next_frame(client)  # the heartbeat went unanswered: the event comes first
    assert (event["t"], event["s"], event["d"]["content"]) == ("MESSAGE_CREATE", 2, "")
    assert sent == event["d"] and fake.heartbeats == 2
    client.sendClose(4000)
    assert await fake_closed(client) == 4000  # echoed back
    await until(lambda: fake.connections == [])
    assert fake.session is not None  # a non-1000 close leaves the session resumable


async def fake_closed(client: Client) -> int:
    return await client.factory.closed.addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_resume_replays_what_was_missed(fake: FakeDiscord) -> None:
    client = await connect(fake)
    await next_frame(client)
    await identify(client, DIRECT_MESSAGES | MESSAGE_CONTENT)
    ready = await next_frame(client)
    client.sendClose(4000)  # not 1000: the session stays resumable
    await client.factory.lost.addTimeout(WAIT, reactor)
    missed = fake.message_create("while away")
    assert missed is not None and fake.connections == []

    again = await connect(fake, ready["d"]["resume_gateway_url"] + "/?v=10&encoding=json")
    await next_frame(again)
    again.send(6, {"token": TOKEN, "session_id": ready["d"]["session_id"], "seq": 1})
    replayed, resumed = await next_frame(again), await next_frame(again)
    assert (replayed["t"], replayed["s"], replayed["d"]["content"]) == ("MESSAGE_CREATE", 2,
                                                                        "while away")
    assert (resumed["t"], resumed["s"]) == ("RESUMED", 3)
    await fake.wait_ready(2)
    assert fake.readies == ["READY", "RESUMED"] and fake.connects == 2

    fake.invalidate_session()
    assert await next_frame(again) == {"op": 9, "d": False, "s": None, "t": None}
    again.send(6, {"token": TOKEN, "session_id": ready["d"]["session_id"], "seq": 3})
    assert (await next_frame(again))["op"] == 9  # forgotten: cannot be resumed


@pytest_twisted.ensureDeferred
async def test_fatal_close_codes(fake: FakeDiscord) -> None:
    client = await connect(fake)
    await next_frame(client)
    await identify(client, GUILD_MESSAGES, token="wrong")
    assert await fake_closed(client) == 4004

    fake.message_content_allowed = False
    client = await connect(fake)
    await next_frame(client)
    await identify(client, GUILD_MESSAGES | MESSAGE_CONTENT)
    assert await fake_closed(client) == 4014
    assert fake.identifies == [] and fake.readies == []


@pytest_twisted.ensureDeferred
async def test_interaction_callback_followup_and_expiry(fake: FakeDiscord, http: Any) -> None:
    client = await connect(fake)
    await next_frame(client)
    await identify(client, DIRECT_MESSAGES)
    await next_frame(client)
    d = fake.interaction("status", {"agent": "a1"})
    event = await next_frame(client)
    assert event["t"] == "INTERACTION_CREATE" and event["d"]["data"]["options"][0]["value"] == "a1"
    callback = f"{fake.api_base_url}/interactions/{d['id']}/{d['token']}/callback"
    assert (await post(http, callback, {"type": 5}, headers={}))[0] == 204
    code, body, _ = await post(http, callback, {"type": 5}, headers={})
    assert (code, body["code"]) == (400, 40060)
    code, body, _ = await post(http, f"{fake.api_base_url}/webhooks/app-1/{d['token']}",
                               {"content": "done"}, headers={})
    assert code == 200 and fake.followups[0]["content"] == "done"

    late = fake.interaction("status")
    fake._interactions[late["id"]]["created"] -= 3.5  # as if 3.5 s had passed unanswered
    code, body, _ = await post(
        http, f"{fake.api_base_url}/interactions/{late['id']}/{late['token']}/callback",
        {"type": 4, "data": {"content": "too late"}}, headers={})
    assert (code, body["code"]) == (404, 10062)
    assert [r["interaction_id"] for r in fake.interaction_responses] == [d["id"]]
