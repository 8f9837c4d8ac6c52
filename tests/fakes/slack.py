"""A loopback stand-in for the parts of Slack a bot uses, following the documented API.

`https://slack.com/api/<method>` becomes `<base>/api/<method>` (so a client's
api_base_url is `<base>/api`), `https://hooks.slack.com/services/T…/B…/…` becomes
`fake.webhook_url`, and the temporary Socket Mode `wss://…` URL handed out by
`apps.connections.open` becomes `ws://127.0.0.1:<port>/link/?ticket=…`.

Documented behaviour followed (Slack's chat.postMessage, apps.connections.open and
"Using Socket Mode" pages, and its Block Kit reference for the block limits):

- Web API: POST (GET also works) with a JSON or form-urlencoded body; every answer is
  HTTP 200 JSON carrying `ok`, errors are `{"ok": false, "error": "<code>"}`. The token
  goes in `Authorization: Bearer …`; none → `not_authed`, unknown → `invalid_auth`,
  the wrong kind of token (bot vs app-level) → `not_allowed_token_type`.
- `auth.test` (bot token) describes the bot.
- `chat.postMessage` (bot token) needs `channel` (`channel_not_found`) and one of
  `text`, `blocks`, `attachments` (`no_text`); text over 40,000 characters →
  `msg_too_long`; Block Kit limits (50 blocks, section text 3,000, 10 section fields of
  2,000, header text 150) → `invalid_blocks`, unparseable blocks →
  `invalid_blocks_format`. Accepted messages get an increasing `ts` and are recorded.
- `apps.connections.open` needs the app-level token in the header (a `token` POST
  parameter is not enough → `not_authed`) and answers a temporary websocket URL.
- Rate limits: HTTP 429, a `Retry-After: <seconds>` header and
  `{"ok": false, "error": "ratelimited"}`; injected with `fail_next`.
- Incoming webhooks answer plain text, not JSON: `ok`, 400 `no_text`,
  400 `invalid_payload`, 404 `no_service`. Slash command `response_url`s behave the same.
- Socket Mode: `hello` on connect; `events_api` and `slash_commands` envelopes; the
  client acks with `{"envelope_id": …, "payload"?: …}`; an Events API envelope not
  acked in time is delivered again with `retry_attempt`/`retry_reason`; `disconnect`
  messages (`warning`, `refresh_requested`, `link_disabled`) precede a server close.

Choices where the docs are silent (keep the report in sync):

- A `fail_next` failure is answered first (before body, method and auth checks).
  Unknown Web API method: HTTP 200 `{"ok": false, "error": "unknown_method"}`
  (checked before auth). A `token` parameter is honoured only in a form-urlencoded body
  (never in a JSON body or the query string, which Slack stopped accepting), and never
  for `apps.connections.open`. A non-Bearer Authorization header counts as missing.
- Unparseable JSON body → `invalid_json`, a JSON body that is not an object →
  `json_not_object`, any other content type → `invalid_form_data`.
- A websocket ticket is single-use: each (re)connection needs a new
  `apps.connections.open`. A bad path → HTTP 404, an unknown/used ticket → HTTP 401;
  either way the handshake is refused and the TCP connection closed.
- Only `events_api` envelopes are redelivered (once, as a NEW envelope_id with the same
  `event_id`, `retry_attempt` 1, `retry_reason` "timeout"); slash commands are not
  retried by Slack (the user sees a timeout). Every envelope whose deadline passes
  unacked is listed in `timed_out`; a redelivery is never redelivered again.
- An envelope sent while no connection is open waits and goes out on the next
  connection, right after its hello; its ack timer starts when it is sent.
- `disconnect()` closes (close code 1000) after `disconnect_grace` whatever the reason.
- Webhook: a non-POST answers 405 `invalid_method`; a form body `payload=<json>`
  (the legacy form) is accepted too. response_urls are not limited to 5 uses/30 min.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

TEAM_ID = "T000"
TEAM_DOMAIN = "fake"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
APP_ID = "A000"
VERIFICATION_TOKEN = "verif"

MAX_TEXT = 40_000
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150

# method -> the token kinds it accepts
METHODS: dict[str, frozenset[str]] = {
    "auth.test": frozenset({"bot"}),
    "chat.postMessage": frozenset({"bot"}),
    "apps.connections.open": frozenset({"app"}),
}


class FakeSlack:
    def __init__(self, bot_token: str, app_token: str, reactor: Any = default_reactor, *,
                 ack_timeout: float = 3.0, disconnect_grace: float = 1.0) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.reactor = reactor
        self.ack_timeout = ack_timeout
        self.disconnect_grace = disconnect_grace

        self.base_url = ""
        self.api_url = ""
        self.webhook_url = ""
        self.ws_port = 0
        self._webhook_path = f"/services/{TEAM_ID}/B000/{secrets.token_hex(12)}"

        # what happened, for assertions
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.posted: list[dict[str, Any]] = []
        self.webhook_posts: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.opened = 0
        self.connects = 0
        self.connections: list[_SocketModeProtocol] = []
        self.envelopes: list[dict[str, Any]] = []  # every envelope written to a socket
        self.acks: list[dict[str, Any]] = []
        self.redelivered: list[dict[str, Any]] = []
        self.timed_out: list[dict[str, Any]] = []
        self.bad_frames: list[str | bytes] = []

        self._failures: dict[str, list[tuple[int, float | None, str]]] = {}
        self._tickets: set[str] = set()
        self._response_urls: set[int] = set()
        self._sockets: list[_SocketModeProtocol] = []  # every websocket TCP connection
        self._queued: list[dict[str, Any]] = []  # envelopes waiting for a connection
        self._ack_timers: dict[str, tuple[dict[str, Any], Any]] = {}
        self._connect_waiters: list[tuple[int, Deferred]] = []
        self._last_ts = (0, 0)
        self._next_event = 0
        self._next_command = 0
        self._http_port: Any = None
        self._ws_port: Any = None
        self._http_factory: _TrackingFactory | None = None

    # -- lifecycle ----------------------------------------------------------------

    def listen(self) -> str:
        site = Site(_WebResource(self))
        site.timeOut = None  # no idle timer per connection: tests end with none pending
        self._http_factory = _TrackingFactory(site)
        self._http_port = self.reactor.listenTCP(0, self._http_factory, interface="127.0.0.1")
        self.base_url = f"http://127.0.0.1:{self._http_port.getHost().port}"
        self.api_url = f"{self.base_url}/api"
        self.webhook_url = f"{self.base_url}{self._webhook_path}"

        factory = WebSocketServerFactory(reactor=self.reactor)
        factory.protocol = _SocketModeProtocol
        factory.fake = self
        self._ws_port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ws_port = self._ws_port.getHost().port
        return self.base_url

    def stop(self) -> Deferred:
        """Stop listening, close every websocket (close frame) and HTTP connection, and
        cancel every timer; fires when all of it is done."""
        for _, call in self._ack_timers.values():
            if call.active():
                call.cancel()
        self._ack_timers.clear()
        self._queued.clear()
        waits: list[Deferred] = []
        for port in (self._http_port, self._ws_port):
            if port is not None:
                waits.append(maybeDeferred(port.stopListening))
        self._http_port = self._ws_port = None
        for proto in list(self._sockets):
            proto.cancel_grace()
            waits.append(proto.when_lost())
            if proto.state == WebSocketProtocol.STATE_OPEN:
                proto.sendClose(code=1000)
            elif proto.transport is not None:
                proto.transport.abortConnection()
        if self._http_factory is not None:
            waits.extend(self._http_factory.close_all())
        if not waits:
            return succeed(None)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    # -- test controls --------------------------------------------------------------

    def fail_next(self, method: str, status: int = 429, retry_after: float | None = 1,
                  error: str = "ratelimited") -> None:
        """The next call of `method` ("webhook" for the incoming webhook, "response_url"
        for slash command response URLs) fails with this status and error."""
        self._failures.setdefault(method, []).append((status, retry_after, error))

    def wait_connected(self, count: int) -> Deferred:
        """Fires once `count` websocket handshakes have succeeded in total."""
        if self.connects >= count:
            return succeed(self.connects)
        waiter: Deferred = Deferred()
        self._connect_waiters.append((count, waiter))
        return waiter

    def send_event(self, event: dict[str, Any]) -> str:
        """Wrap an Events API event in an `events_api` envelope and send it on the newest
        open connection (or on the next one if none is open). Returns the envelope_id."""
        self._next_event += 1
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": VERIFICATION_TOKEN,
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": event,
                "type": "event_callback",
                "event_id": f"Ev{self._next_event:08d}",
                "event_time": int(self.reactor.seconds()),
                "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                                    "is_bot": True, "is_enterprise_install": False}],
                "is_ext_shared_channel": False,
            },
        }
        self._deliver(envelope)
        return envelope["envelope_id"]

    def message(self, text: str, user: str = "U111", channel: str = "D111", channel_type: str = "im",
                thread_ts: str | None = None) -> dict[str, Any]:
        """A person's message (`message` event, as for message.im / message.channels)."""
        ts = self._new_ts()
        event: dict[str, Any] = {
            "type": "message", "channel_type": channel_type, "user": user, "text": text, "ts": ts,
            "channel": channel, "event_ts": ts, "team": TEAM_ID, "client_msg_id": str(uuid.uuid4()),
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        self.send_event(event)
        return event

    def mention(self, text: str, user: str = "U111", channel: str = "C111",
                thread_ts: str | None = None) -> dict[str, Any]:
        """An `app_mention` event: the text starts with the bot's mention."""
        ts = self._new_ts()
        event: dict[str, Any] = {
            "type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": channel, "event_ts": ts, "team": TEAM_ID, "client_msg_id": str(uuid.uuid4()),
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        self.send_event(event)
        return event

    def bot_message(self, text: str, channel: str, thread_ts: str | None = None) -> dict[str, Any]:
        """The echo of the bot's own post, as Slack delivers it to a subscribed app."""
        ts = self._new_ts()
        event: dict[str, Any] = {
            "type": "message", "channel_type": "im" if channel.startswith("D") else "channel",
            "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID, "text": text, "ts": ts,
            "channel": channel, "event_ts": ts, "team": TEAM_ID,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        self.send_event(event)
        return event

    def slash_command(self, command: str = "/aiwg", text: str = "status", user: str = "U111",
                      channel: str = "C111") -> str:
        """A `slash_commands` envelope (payload fields are strings, as Slack sends them);
        its response_url is served by this fake. Returns the envelope_id."""
        self._next_command += 1
        n = self._next_command
        self._response_urls.add(n)
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {
                "token": VERIFICATION_TOKEN,
                "team_id": TEAM_ID,
                "team_domain": TEAM_DOMAIN,
                "channel_id": channel,
                "channel_name": "directmessage" if channel.startswith("D") else "general",
                "user_id": user,
                "user_name": "alice",
                "command": command,
                "text": text,
                "api_app_id": APP_ID,
                "is_enterprise_install": "false",
                "response_url": f"{self.base_url}/commands/respond/{n}",
                "trigger_id": f"{n}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
            },
        }
        self._deliver(envelope)
        return envelope["envelope_id"]

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Send a `disconnect` message on every open connection and close each one after
        `disconnect_grace` seconds unless the client has closed it first."""
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        for proto in list(self.connections):
            proto.send_json(frame)
            proto.cancel_grace()
            proto.grace_call = self.reactor.callLater(self.disconnect_grace, proto.close_after_grace)

    def drop(self) -> None:
        """Abort every websocket transport with no close frame: a lost network."""
        for proto in list(self._sockets):
            proto.cancel_grace()
            if proto in self.connections:
                self.connections.remove(proto)
            if proto.transport is not None:
                proto.transport.abortConnection()

    # -- websocket side ---------------------------------------------------------------

    def _check_handshake(self, request: Any) -> None:
        if request.path != "/link/":
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "no such link")
        ticket = (request.params.get("ticket") or [""])[0]
        if ticket not in self._tickets:
            raise ConnectionDeny(401, "invalid ticket")
        self._tickets.discard(ticket)  # single use

    def _socket_opened(self, proto: _SocketModeProtocol) -> None:
        self.connections.append(proto)
        self.connects += 1
        proto.send_json({
            "type": "hello",
            "num_connections": len(self.connections),
            "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
            "connection_info": {"app_id": APP_ID},
        })
        queued, self._queued = self._queued, []
        for envelope in queued:
            self._deliver(envelope)
        ready = [w for w in self._connect_waiters if self.connects >= w[0]]
        self._connect_waiters = [w for w in self._connect_waiters if self.connects < w[0]]
        for _, waiter in ready:
            waiter.callback(self.connects)

    def _socket_lost(self, proto: _SocketModeProtocol) -> None:
        if proto in self.connections:
            self.connections.remove(proto)
        if proto in self._sockets:
            self._sockets.remove(proto)

    def _frame(self, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self.bad_frames.append(payload)
            return
        text = payload.decode("utf-8", errors="replace")
        try:
            frame = json.loads(text)
        except ValueError:
            self.bad_frames.append(text)
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("envelope_id"), str):
            self.bad_frames.append(text)
            return
        self.acks.append(frame)
        pending = self._ack_timers.pop(frame["envelope_id"], None)
        if pending is not None and pending[1].active():
            pending[1].cancel()

    def _deliver(self, envelope: dict[str, Any]) -> None:
        if not self.connections:
            self._queued.append(envelope)
            return
        self.connections[-1].send_json(envelope)
        self.envelopes.append(envelope)
        call = self.reactor.callLater(self.ack_timeout, self._ack_overdue, envelope["envelope_id"])
        self._ack_timers[envelope["envelope_id"]] = (envelope, call)

    def _ack_overdue(self, envelope_id: str) -> None:
        envelope, _ = self._ack_timers.pop(envelope_id)
        self.timed_out.append(envelope)
        if envelope["type"] != "events_api" or envelope.get("retry_attempt", 0) >= 1:
            return
        again = {**envelope, "envelope_id": str(uuid.uuid4()),
                 "retry_attempt": 1, "retry_reason": "timeout"}
        self.redelivered.append(again)
        self._deliver(again)

    # -- HTTP side ---------------------------------------------------------------------

    def _render(self, request: Any) -> bytes:
        path = request.path.decode()
        if path.startswith("/api/"):
            return self._web_api(request, path[len("/api/"):])
        if path == self._webhook_path:
            return self._plain_post(request, "webhook", self.webhook_posts, {})
        if path.startswith("/commands/respond/"):
            tail = path[len("/commands/respond/"):]
            if tail.isdigit() and int(tail) in self._response_urls:
                return self._plain_post(request, "response_url", self.responses,
                                        {"response_url": f"{self.base_url}{path}"})
        return _plain(request, 404, "no_service")

    def _web_api(self, request: Any, method: str) -> bytes:
        params, body_token, problem = _api_params(request)
        self.calls.append((method, params, self.reactor.seconds()))
        failed = self._failure(request, method, plain=False)
        if failed is not None:
            return failed
        if problem:
            return _json(request, 200, {"ok": False, "error": problem})
        if method not in METHODS:
            return _json(request, 200, {"ok": False, "error": "unknown_method", "req_method": method})
        header = request.getHeader("authorization") or ""
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token and method != "apps.connections.open":
            token = body_token or ""
        if not token:
            return _json(request, 200, {"ok": False, "error": "not_authed"})
        kind = "bot" if token == self.bot_token else "app" if token == self.app_token else None
        if kind is None:
            return _json(request, 200, {"ok": False, "error": "invalid_auth"})
        if kind not in METHODS[method]:
            return _json(request, 200, {"ok": False, "error": "not_allowed_token_type"})
        if method == "auth.test":
            return _json(request, 200, {"ok": True, "url": "https://fake.slack.com/", "team": "Fake",
                                        "user": "aiwg", "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                                        "bot_id": BOT_ID, "is_enterprise_install": False})
        if method == "apps.connections.open":
            ticket = secrets.token_urlsafe(16)
            self._tickets.add(ticket)
            self.opened += 1
            return _json(request, 200, {"ok": True,
                                        "url": f"ws://127.0.0.1:{self.ws_port}/link/?ticket={ticket}"})
        return self._post_message(request, params)

    def _post_message(self, request: Any, params: dict[str, Any]) -> bytes:
        channel = params.get("channel")
        if not channel:
            return _json(request, 200, {"ok": False, "error": "channel_not_found"})
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks) if blocks.strip() else None
            except ValueError:
                return _json(request, 200, {"ok": False, "error": "invalid_blocks_format"})
        if blocks is not None and not isinstance(blocks, list):
            return _json(request, 200, {"ok": False, "error": "invalid_blocks_format"})
        text = params.get("text")
        text = "" if text is None else str(text)
        if not text and not blocks and not params.get("attachments"):
            return _json(request, 200, {"ok": False, "error": "no_text"})
        if len(text) > MAX_TEXT:
            return _json(request, 200, {"ok": False, "error": "msg_too_long"})
        if blocks and not _blocks_valid(blocks):
            return _json(request, 200, {"ok": False, "error": "invalid_blocks"})
        ts = self._new_ts()
        record = {k: v for k, v in params.items() if k != "token"}
        if blocks is not None:
            record["blocks"] = blocks
        record["ts"] = ts
        self.posted.append(record)
        message: dict[str, Any] = {"type": "message", "text": text, "ts": ts, "user": BOT_USER_ID,
                                   "bot_id": BOT_ID, "app_id": APP_ID, "team": TEAM_ID}
        if blocks:
            message["blocks"] = blocks
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        return _json(request, 200, {"ok": True, "channel": channel, "ts": ts, "message": message})

    def _plain_post(self, request: Any, name: str, records: list[dict[str, Any]],
                    extra: dict[str, Any]) -> bytes:
        """Incoming webhooks and response_urls: JSON in, plain text out."""
        if request.method != b"POST":
            return _plain(request, 405, "invalid_method")
        payload = _hook_payload(request)
        self.calls.append((name, payload if payload is not None else {}, self.reactor.seconds()))
        failed = self._failure(request, name, plain=True)
        if failed is not None:
            return failed
        if payload is None:
            return _plain(request, 400, "invalid_payload")
        if not payload.get("text") and not payload.get("blocks") and not payload.get("attachments"):
            return _plain(request, 400, "no_text")
        records.append({**payload, **extra})
        return _plain(request, 200, "ok")

    def _failure(self, request: Any, method: str, plain: bool) -> bytes | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        status, retry_after, error = queue.pop(0)
        if retry_after is not None:
            request.setHeader(b"retry-after", str(retry_after).encode())
        if plain:
            return _plain(request, status, error)
        return _json(request, status, {"ok": False, "error": error})

    def _new_ts(self) -> str:
        """'<epoch seconds>.<6 digits>', strictly increasing."""
        now = self.reactor.seconds()
        candidate = (int(now), int((now - int(now)) * 1_000_000))
        if candidate <= self._last_ts:
            seconds, micros = self._last_ts
            candidate = (seconds + 1, 0) if micros >= 999_999 else (seconds, micros + 1)
        self._last_ts = candidate
        return f"{candidate[0]}.{candidate[1]:06d}"


class _SocketModeProtocol(WebSocketServerProtocol):
    """One Socket Mode connection; all the state lives on the FakeSlack."""

    def __init__(self) -> None:
        super().__init__()
        self.grace_call: Any = None
        self._lost_waiters: list[Deferred] = []
        self._gone = False

    @property
    def fake(self) -> FakeSlack:
        return self.factory.fake

    def connectionMade(self) -> None:
        self.fake._sockets.append(self)
        super().connectionMade()

    def onConnect(self, request: Any) -> None:
        self.fake._check_handshake(request)  # raises ConnectionDeny to refuse
        return None

    def onOpen(self) -> None:
        self.fake._socket_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.fake._frame(payload, isBinary)

    def send_json(self, body: dict[str, Any]) -> None:
        self.sendMessage(json.dumps(body).encode(), isBinary=False)

    def cancel_grace(self) -> None:
        if self.grace_call is not None and self.grace_call.active():
            self.grace_call.cancel()
        self.grace_call = None

    def close_after_grace(self) -> None:
        self.grace_call = None
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendClose(code=1000)

    def when_lost(self) -> Deferred:
        if self._gone:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._lost_waiters.append(waiter)
        return waiter

    def connectionLost(self, reason: Any) -> None:
        try:
            super().connectionLost(reason)
        finally:
            # autobahn leaves its close-handshake timer running when the peer vanishes
            # instead of answering our close frame: cancel it so no timer outlives us.
            if self.closeHandshakeTimeoutCall is not None:
                self.closeHandshakeTimeoutCall.cancel()
                self.closeHandshakeTimeoutCall = None
            self.cancel_grace()
            self._gone = True
            self.fake._socket_lost(self)
            waiters, self._lost_waiters = self._lost_waiters, []
            for waiter in waiters:
                waiter.callback(None)


class _WebResource(Resource):
    isLeaf = True

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: Any) -> bytes:
        return self.fake._render(request)


class _TrackingFactory(WrappingFactory):
    """Keeps the HTTP connections so stop() can close them: stopListening alone leaves
    a client's keep-alive connection open on the fake's side."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._waiters: dict[Any, list[Deferred]] = {}

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        for waiter in self._waiters.pop(p, []):
            waiter.callback(None)

    def close_all(self) -> list[Deferred]:
        waits = []
        for wrapper in list(self.protocols):
            waiter: Deferred = Deferred()
            self._waiters.setdefault(wrapper, []).append(waiter)
            waits.append(waiter)
            wrapper.transport.loseConnection()
        return waits


def _api_params(request: Any) -> tuple[dict[str, Any], str | None, str | None]:
    """(params, token from a form body, error code) for a Web API request."""
    query = urlsplit(request.uri.decode()).query
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    params.pop("token", None)  # query-string tokens are not accepted
    body = _body(request)
    if not body:
        return params, None, None
    kind = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            parsed = json.loads(body)
        except ValueError:
            return params, None, "invalid_json"
        if not isinstance(parsed, dict):
            return params, None, "json_not_object"
        params.update(parsed)
        return params, None, None
    if kind == "application/x-www-form-urlencoded":
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace"),
                                               keep_blank_values=True).items()}
        params.update(form)
        return params, form.get("token"), None
    return params, None, "invalid_form_data"


def _hook_payload(request: Any) -> dict[str, Any] | None:
    body = _body(request)
    kind = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", errors="replace"))
        body = form.get("payload", [""])[-1].encode()
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _body(request: Any) -> bytes:
    if request.content is None:
        return b""
    request.content.seek(0)
    return request.content.read()


def _blocks_valid(blocks: list[Any]) -> bool:
    if len(blocks) > MAX_BLOCKS:
        return False
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return False
        if block["type"] == "section":
            text = block.get("text")
            fields = block.get("fields")
            if text is None and not fields:
                return False
            if text is not None and len(_text_of(text)) > MAX_SECTION_TEXT:
                return False
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                    return False
                if any(len(_text_of(f)) > MAX_FIELD_TEXT for f in fields):
                    return False
        elif block["type"] == "header":
            if len(_text_of(block.get("text"))) > MAX_HEADER_TEXT:
                return False
    return True


def _text_of(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return "" if obj is None else str(obj)


def _json(request: Any, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(body).encode()


def _plain(request: Any, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode()
