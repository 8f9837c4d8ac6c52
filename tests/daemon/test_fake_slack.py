"""The loopback Slack fake itself: Web API auth and limits, the plain-text webhook,
injected 429s, and Socket Mode (hello, envelopes, acks, redelivery, disconnect, drop)."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from tests.fakes.slack import FakeSlack

BOT = "xoxb-fake-bot-token"
APP = "xapp-fake-app-token"
WAIT = 3  # seconds: an upper bound, never a sleep


class Client(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.inbox: DeferredQueue = DeferredQueue()
        self.ws_open: Deferred = Deferred()
        self.ws_closed: Deferred = Deferred()

    def onOpen(self) -> None:
        self.ws_open.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.inbox.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.ws_closed.called:
            self.ws_closed.callback((wasClean, code))

    def send(self, body: Any) -> None:
        self.sendMessage(body if isinstance(body, bytes) else json.dumps(body).encode())

    def next(self) -> Deferred:
        return self.inbox.get().addTimeout(WAIT, reactor)


class Harness:
    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        self.sockets: list[Client] = []

    async def api(self, method: str, token: str | None = BOT, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(f"{self.fake.api_url}/{method}", headers=headers, **kwargs)
        assert response.code == 200
        return await response.json()

    async def post(self, url: str, **kwargs: Any) -> tuple[int, bytes, Any]:
        response = await self.http.post(url, **kwargs)
        return response.code, await response.content(), response.headers

    async def connect(self, url: str | None = None) -> Client:
        if url is None:
            url = (await self.api("apps.connections.open", token=APP))["url"]
        factory = WebSocketClientFactory(url)
        factory.protocol = Client
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", factory.port, timeout=WAIT)
        client = await endpoint.connect(factory)
        self.sockets.append(client)
        return client


@pytest_twisted.async_yield_fixture
async def h() -> Harness:
    fake = FakeSlack(BOT, APP, ack_timeout=0.2, disconnect_grace=0.2)
    fake.listen()
    harness = Harness(fake)
    try:
        yield harness
    finally:
        await fake.stop()
        for client in harness.sockets:  # the client side must be gone too: its timers die with it
            await client.ws_closed.addTimeout(WAIT, reactor)
        await deferLater(reactor, 0, lambda: None)  # one turn: the client ends of closed HTTP sockets go


@pytest_twisted.ensureDeferred
async def test_web_api_auth_and_post_message_limits(h: Harness) -> None:
    assert (await h.api("auth.test", token=None))["error"] == "not_authed"
    assert (await h.api("auth.test", token="xoxb-wrong"))["error"] == "invalid_auth"
    me = await h.api("auth.test")
    assert me["ok"] and me["user_id"] == "UBOT" and me["bot_id"] == "BBOT"
    assert (await h.api("nope.never"))["error"] == "unknown_method"

    assert (await h.api("chat.postMessage", json={"text": "hi"}))["error"] == "channel_not_found"
    assert (await h.api("chat.postMessage", json={"channel": "C1"}))["error"] == "no_text"
    too_long = await h.api("chat.postMessage", json={"channel": "C1", "text": "x" * 40_001})
    assert too_long["error"] == "msg_too_long"
    many = await h.api("chat.postMessage", json={"channel": "C1", "blocks": [{"type": "divider"}] * 51})
    assert many["error"] == "invalid_blocks"
    big = {"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}
    too_big = await h.api("chat.postMessage", json={"channel": "C1", "blocks": [big]})
    assert too_big["error"] == "invalid_blocks"
    assert h.fake.posted == []

    first = await h.api("chat.postMessage", json={"channel": "C1", "text": "x" * 40_000})
    form = {"channel": "D1", "text": "reply", "thread_ts": first["ts"]}
    second = await h.api("chat.postMessage", data=form)  # form-urlencoded this time
    assert first["ok"] and second["ok"] and second["channel"] == "D1"
    assert second["message"]["user"] == "UBOT" and second["message"]["bot_id"] == "BBOT"
    assert float(second["ts"]) > float(first["ts"]) and len(second["ts"].split(".")[1]) == 6
    assert [p["channel"] for p in h.fake.posted] == ["C1", "D1"]
    assert h.fake.posted[1]["thread_ts"] == first["ts"] and h.fake.posted[1]["ts"] == second["ts"]


@pytest_twisted.ensureDeferred
async def test_webhook_is_plain_text_and_fail_next_gives_429(h: Harness) -> None:
    code, body, headers = await h.post(h.fake.webhook_url, json={"text": "build done"})
    assert (code, body) == (200, b"ok")
    assert headers.getRawHeaders("content-type")[0].startswith("text/plain")
    assert (await h.post(h.fake.webhook_url, json={"username": "x"}))[:2] == (400, b"no_text")
    broken = await h.post(h.fake.webhook_url, data=b"{nope",
                          headers={"Content-Type": "application/json"})
    assert broken[:2] == (400, b"invalid_payload")
    assert (await h.post(h.fake.webhook_url + "x", json={"text": "t"}))[:2] == (404, b"no_service")
    assert h.fake.webhook_posts == [{"text": "build done"}]

    h.fake.fail_next("webhook", retry_after=2)
    code, body, headers = await h.post(h.fake.webhook_url, json={"text": "again"})
    assert (code, body, headers.getRawHeaders("retry-after")) == (429, b"ratelimited", ["2"])

    h.fake.fail_next("chat.postMessage")
    response = await h.http.post(f"{h.fake.api_url}/chat.postMessage", json={"channel": "C1", "text": "t"},
                                 headers={"Authorization": f"Bearer {BOT}"})
    assert response.code == 429 and response.headers.getRawHeaders("retry-after") == ["1"]
    assert await response.json() == {"ok": False, "error": "ratelimited"}
    assert (await h.api("chat.postMessage", json={"channel": "C1", "text": "t"}))["ok"]
    times = [t for m, _, t in h.fake.calls if m == "chat.postMessage"]
    assert len(times) == 2 and times[0] <= times[1]


@pytest_twisted.ensureDeferred
async def test_connections_open_needs_the_app_token_in_the_header(h: Harness) -> None:
    in_body = await h.api("apps.connections.open", token=None, data={"token": APP})
    assert in_body == {"ok": False, "error": "not_authed"}
    assert (await h.api("apps.connections.open", token=BOT))["error"] == "not_allowed_token_type"
    opened = await h.api("apps.connections.open", token=APP)
    assert opened["ok"] and opened["url"].startswith(f"ws://127.0.0.1:{h.fake.ws_port}/link/?ticket=")
    assert h.fake.opened == 1

    bad = await h.connect(opened["url"] + "forged")
    assert (await bad.ws_closed.addTimeout(WAIT, reactor))[0] is False and not bad.ws_open.called
    good = await h.connect(opened["url"])
    assert (await good.next())["type"] == "hello"
    reused = await h.connect(opened["url"])  # a ticket is good for one connection
    await reused.ws_closed.addTimeout(WAIT, reactor)
    assert not reused.ws_open.called and h.fake.connects == 1


@pytest_twisted.ensureDeferred
async def test_hello_events_acks_and_slash_commands(h: Harness) -> None:
    client = await h.connect()
    hello = await client.next()
    assert hello["type"] == "hello" and hello["num_connections"] == 1
    assert hello["debug_info"]["approximate_connection_time"] == 3600

    event = h.fake.message("status please", thread_ts="1.000001")
    envelope = await client.next()
    assert envelope["type"] == "events_api" and envelope["accepts_response_payload"] is False
    assert envelope["payload"]["event"] == event and event["thread_ts"] == "1.000001"
    assert envelope["payload"]["event_id"].startswith("Ev") and envelope["retry_attempt"] == 0
    client.send({"envelope_id": envelope["envelope_id"]})

    h.fake.mention("hi", thread_ts=None)
    mention = await client.next()
    assert mention["payload"]["event"]["type"] == "app_mention"
    assert mention["payload"]["event"]["text"] == "<@UBOT> hi"
    client.send({"envelope_id": mention["envelope_id"]})

    h.fake.slash_command(text="status")
    command = await client.next()
    assert command["type"] == "slash_commands" and command["accepts_response_payload"] is True
    client.send({"envelope_id": command["envelope_id"], "payload": {"text": "working on it"}})
    client.send(b"not json")
    client.send({"type": "ping"})
    url = command["payload"]["response_url"]
    assert (await h.post(url, json={"text": "done", "response_type": "in_channel"}))[:2] == (200, b"ok")
    assert h.fake.responses == [{"text": "done", "response_type": "in_channel", "response_url": url}]
    assert [a["envelope_id"] for a in h.fake.acks] == [envelope["envelope_id"], mention["envelope_id"],
                                                       command["envelope_id"]]
    assert h.fake.acks[2]["payload"] == {"text": "working on it"}
    assert h.fake.bad_frames == ["not json", '{"type": "ping"}']
    assert h.fake.redelivered == []


@pytest_twisted.ensureDeferred
async def test_an_unacked_event_is_redelivered_once(h: Harness) -> None:
    client = await h.connect()
    await client.next()  # hello
    h.fake.bot_message("echo of my own post", "C111")
    first = await client.next()
    assert first["payload"]["event"]["bot_id"] == "BBOT"
    again = await client.next()  # ack_timeout is 0.2 s
    assert again["retry_attempt"] == 1 and again["retry_reason"] == "timeout"
    assert again["payload"]["event_id"] == first["payload"]["event_id"]
    assert h.fake.redelivered == [again]
    client.send({"envelope_id": again["envelope_id"]})


@pytest_twisted.ensureDeferred
async def test_disconnect_then_server_close_and_drop(h: Harness) -> None:
    client = await h.connect()
    await client.next()  # hello
    h.fake.disconnect("warning")
    notice = await client.next()
    assert notice == {"type": "disconnect", "reason": "warning", "debug_info": {"host": "fake-slack"}}
    assert await client.ws_closed.addTimeout(WAIT, reactor) == (True, 1000)  # closed by the server

    h.fake.send_event({"type": "message", "text": "while away"})  # waits for the next connection
    second = await h.connect()
    await h.fake.wait_connected(2).addTimeout(WAIT, reactor)
    assert (await second.next())["type"] == "hello"
    assert (await second.next())["payload"]["event"]["text"] == "while away"
    client_count = len(h.fake.connections)
    h.fake.drop()
    wasClean, _ = await second.ws_closed.addTimeout(WAIT, reactor)
    assert client_count == 1 and wasClean is False and h.fake.connections == []
