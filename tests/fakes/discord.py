"""A loopback stand-in for the parts of Discord a bot uses (API and gateway v10),
following the documented behaviour.

`https://discord.com/api/v10/...` becomes `http://127.0.0.1:<port>/api/v10/...`, and
`wss://gateway.discord.gg/?v=10&encoding=json` becomes
`ws://127.0.0.1:<wsport>/?v=10&encoding=json`. Route names for `set_limit`/`fail_next`:
"gateway_bot", "users_me", "channel_messages", "webhook" (execute, `/api/webhooks/{id}/{token}`
with or without `/v10`), "followup" (`/api/v10/webhooks/{application_id}/{interaction_token}`)
and "interaction_callback".

REST (JSON bodies; errors are `{"message": "...", "code": N, "errors"?: {...}}`):
- Bot routes need `Authorization: Bot <token>`, else 401
  `{"message": "401: Unauthorized", "code": 0}`.
  Webhook, follow-up and interaction-callback routes are authorised by the token in the
  path and need no header.
- Every answer on a known route carries `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch
  seconds), `-Reset-After` (seconds) and `-Bucket`. Limits are fixed windows counted per
  route and major parameter (channel id, webhook id + token, interaction id), as the docs
  describe; the bucket id names the route, so two channels share a bucket id but not a count.
  A request over the limit gets 429 with `Retry-After` (whole seconds, rounded up, as in the
  docs' example), `X-RateLimit-Scope: user` and `{"message": "You are being rate limited.",
  "retry_after": <float>, "global": false}`; `fail_next` can inject any status, including a
  global 429 (`X-RateLimit-Global: true`, scope `global`).
- Message bodies (channel messages, webhooks, follow-ups, type-4 callbacks) are checked
  against the documented limits: content <= 2000 characters, <= 10 embeds, title <= 256,
  description <= 4096, <= 25 fields, field name <= 256, field value <= 1024, footer text
  <= 2048, author name <= 256, and <= 6000 characters summed over every embed of the message.
  Failures are 400 code 50035 "Invalid Form Body" with an `errors` tree in Discord's shape
  (`{"embeds": {"0": {"title": {"_errors": [{"code", "message"}]}}}}`); a body with neither
  content nor embeds (whitespace-only content counts as none) is 400 code 50006 "Cannot send
  an empty message". A reply to a message id this fake never produced is refused (Discord's
  "Unknown message") unless `message_reference.fail_if_not_exists` is false.
- Webhook execute answers 204 without `?wait=true` and the message object with it. Webhook
  usernames may not contain "discord" or "clyde" (Discord's naming rule).
- Interactions must be answered (callback type 4 or 5) within 3 s of their creation, after
  which the callback gets 404 10062 "Unknown interaction"; a second callback gets 400 40060
  "Interaction has already been acknowledged."; follow-ups need an acknowledged interaction
  whose token is under 15 minutes old, else 404 10015 "Unknown Webhook" (the follow-up route
  is a webhook route).
- Every message the bot creates (channel message, webhook, follow-up, type-4 callback) is
  echoed to the gateway as MESSAGE_CREATE authored by the bot or webhook, as Discord does,
  unless `echo_own_messages` is False. A bridge must ignore its own messages.

Gateway (JSON text frames `{"op", "d", "s", "t"}`):
- Hello (op 10) on connect. Heartbeat (op 1) gets Heartbeat ACK (op 11) unless `zombie`.
  Heartbeats are allowed before Identify. No heartbeat for 2 x interval closes the
  connection with 4000 and keeps the session resumable (the docs do not say what the real
  gateway does here; this is the fake's choice).
- Identify (op 2): wrong token 4004, second identify 4005, intents not an integer in range
  4013, MESSAGE_CONTENT while `message_content_allowed` is False 4014; else READY (s=1).
- Op 3/4/8/31 before Identify 4003; an unknown opcode 4001; undecodable frames 4002.
- Resume (op 6): wrong token 4004; unknown or invalidated session op 9 `false`; a seq beyond
  the session's last 4007; else every stored dispatch with s > seq, then RESUMED.
- A client close with 1000 or 1001 invalidates the session (documented); any other close or
  a dropped TCP connection leaves it resumable. A server close with 4007 or 4009 ("start a new
  session") forgets it too.
- Without MESSAGE_CONTENT, guild messages that do not mention the bot arrive with empty
  content, embeds, attachments and components; DMs and the bot's own messages keep theirs.
  Guild messages need GUILD_MESSAGES, DMs need DIRECT_MESSAGES; INTERACTION_CREATE needs none.
- Not modelled: zlib/zstd compression, ETF encoding (closes 4002), sharding, presence,
  guild member requests (accepted and ignored), the global 50 req/s limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import unquote

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

API_VERSION = 10
APPLICATION_ID = "app-1"
WEBHOOK_ID = "123"
WEBHOOK_CHANNEL_ID = "555"
DISCORD_EPOCH_MS = 1420070400000

# Gateway intents (bit flags) that change what the fake dispatches.
GUILDS = 1 << 0
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
INTENTS_LIMIT = 1 << 26  # highest documented intent is 1 << 25

INTERACTION_RESPONSE_WINDOW = 3.0
INTERACTION_TOKEN_LIFETIME = 15 * 60.0

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_FIELDS = 25
EMBED_TEXT_LIMITS = {"title": 256, "description": 4096}

ROUTES = ("gateway_bot", "users_me", "channel_messages", "webhook", "followup",
          "interaction_callback")
DEFAULT_LIMIT = (1000, 1.0)


def _too_long(limit: int) -> dict[str, Any]:
    return {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                         "message": f"Must be {limit} or fewer in length."}]}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _json_error(status: int, route: str) -> dict[str, Any]:
    """The body Discord gives for a status injected with fail_next."""
    if status == 401:
        return {"message": "401: Unauthorized", "code": 0}
    if status == 403:
        return {"message": "Missing Access", "code": 50001}
    if status == 404:
        return {"channel_messages": {"message": "Unknown Channel", "code": 10003},
                "webhook": {"message": "Unknown Webhook", "code": 10015},
                "followup": {"message": "Unknown Webhook", "code": 10015},
                "interaction_callback": {"message": "Unknown interaction", "code": 10062},
                }.get(route, {"message": "404: Not Found", "code": 0})
    if status == 400:
        return {"message": "Invalid Form Body", "code": 50035, "errors": {}}
    reasons = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
               504: "Gateway Timeout"}
    return {"message": f"{status}: {reasons.get(status, 'Error')}", "code": 0}


class _Session:
    def __init__(self, session_id: str, intents: int) -> None:
        self.id = session_id
        self.intents = intents
        self.seq = 0
        self.backlog: list[dict[str, Any]] = []
        self.connection: _GatewayProtocol | None = None


class _GatewayProtocol(WebSocketServerProtocol):
    """One gateway connection; every decision is made by the FakeDiscord."""

    def connectionMade(self) -> None:
        self.fake: FakeDiscord = self.factory.fake
        self.session: _Session | None = None
        self.params: dict[str, list[str]] = {}
        self.heartbeat_timer: Any = None
        self.close_timer: Any = None
        self.client_close_code: int | None = None
        self.lost: Deferred[None] = Deferred()
        self.fake._ws_protocols.add(self)
        super().connectionMade()

    def onConnect(self, request: Any) -> None:
        self.params = request.params
        return None

    def onOpen(self) -> None:
        self.fake._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.fake._frame(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if wasClean and not self.closedByMe:
            self.client_close_code = code

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.fake._lost(self)
        self.lost.callback(None)

    def send_json(self, frame: dict[str, Any]) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(frame).encode(), isBinary=False)


class _TrackingFactory(WrappingFactory):
    """Knows the open HTTP connections so that stop() can end them."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self.waiters: dict[Any, list[Deferred[None]]] = {}

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        for waiter in self.waiters.pop(p, []):
            waiter.callback(None)


class FakeDiscord(Resource):
    isLeaf = True

    def __init__(self, bot_token: str, reactor: Any = default_reactor,
                 heartbeat_interval_ms: int = 41250) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.reactor = reactor
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.bot_user: dict[str, Any] = {"id": "900", "username": "aiwg", "discriminator": "0",
                                         "bot": True}
        self.application_id = APPLICATION_ID
        self.webhook_id = WEBHOOK_ID
        self.webhook_token = secrets.token_urlsafe(51)
        self.webhook_channel_id = WEBHOOK_CHANNEL_ID
        # switches a test may flip
        self.zombie = False
        self.message_content_allowed = True
        self.echo_own_messages = True
        self.channel_guilds: dict[str, str | None] = {}  # learned from message_create/interaction
        # records
        self.calls: list[tuple[str, str, Any, float]] = []
        self.messages: list[dict[str, Any]] = []
        self.webhook_messages: list[dict[str, Any]] = []
        self.interaction_responses: list[dict[str, Any]] = []
        self.followups: list[dict[str, Any]] = []
        self.rate_limited = 0
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.readies: list[str] = []
        self.heartbeats = 0
        self.connects = 0
        self.bad_frames: list[Any] = []
        self.connections: list[_GatewayProtocol] = []
        self.sessions: dict[str, _Session] = {}
        self.session: _Session | None = None  # the one dispatches go to
        # internals
        self._limits: dict[str, tuple[int, float]] = {}
        self._windows: dict[tuple[str, str], list[float]] = {}
        self._failures: dict[str, list[tuple[int, float, bool]]] = {}
        self._interactions: dict[str, dict[str, Any]] = {}
        self._known_messages: set[str] = set()
        self._last_snowflake = 0
        self._timers: set[Any] = set()
        self._ready_waiters: list[tuple[int, Deferred[None]]] = []
        self._ws_protocols: set[_GatewayProtocol] = set()
        self._stopping = False
        self._http_factory: _TrackingFactory | None = None
        self._http_port: Any = None
        self._ws_port: Any = None
        self.base_url = ""
        self.api_base_url = ""
        self.gateway_url = ""
        self.webhook_url = ""

    # -- lifecycle ---------------------------------------------------------------

    def listen(self) -> str:
        site = Site(self)
        site.timeOut = None  # no idle timer per connection: tests end with none pending
        self._http_factory = _TrackingFactory(site)
        self._http_port = self.reactor.listenTCP(0, self._http_factory, interface="127.0.0.1")
        ws_factory = WebSocketServerFactory(reactor=self.reactor)
        ws_factory.protocol = _GatewayProtocol
        ws_factory.fake = self
        # autobahn's own timers share batched reactor calls that outlive a cancel: switch
        # them all off; the fake keeps its own (cancelled) timers instead
        ws_factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0,
                                      autoPingInterval=0, autoPingTimeout=0,
                                      echoCloseCodeReason=True)
        self._ws_port = self.reactor.listenTCP(0, ws_factory, interface="127.0.0.1")
        port = self._http_port.getHost().port
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_base_url = f"{self.base_url}/api/v{API_VERSION}"
        self.gateway_base = f"ws://127.0.0.1:{self._ws_port.getHost().port}"
        self.gateway_url = f"{self.gateway_base}/?v={API_VERSION}&encoding=json"
        self.webhook_url = f"{self.base_url}/api/webhooks/{self.webhook_id}/{self.webhook_token}"
        return self.base_url

    def stop(self) -> Deferred[None]:
        """Abort every connection, close both ports, cancel every timer."""
        self._stopping = True
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        waiters, self._ready_waiters = self._ready_waiters, []
        for _, waiter in waiters:
            waiter.cancel()
        pending: list[Deferred[Any]] = []
        for proto in list(self._ws_protocols):
            pending.append(proto.lost)
            if proto.transport is not None:
                proto.transport.abortConnection()
        if self._http_factory is not None:
            for proto in list(self._http_factory.protocols):
                waiter: Deferred[None] = Deferred()
                self._http_factory.waiters.setdefault(proto, []).append(waiter)
                pending.append(waiter)
                proto.transport.abortConnection()
        for port in (self._http_port, self._ws_port):
            if port is not None:
                pending.append(maybeDeferred(port.stopListening))
        self._http_port = self._ws_port = None
        done = DeferredList(pending, consumeErrors=True)
        return done.addCallback(lambda _: None)

    # -- REST test controls --------------------------------------------------------

    def set_limit(self, route: str = "channel_messages", limit: int = 5,
                  window: float = 1.0) -> None:
        """At most `limit` requests per `window` seconds on `route`, per major parameter."""
        self._check_route(route)
        self._limits[route] = (limit, window)
        self._windows = {k: v for k, v in self._windows.items() if k[0] != route}

    def fail_next(self, route: str, status: int = 429, retry_after: float = 1.0,
                  global_: bool = False) -> None:
        """The next request on `route` gets `status` (a 429 with Discord's headers and body)."""
        self._check_route(route)
        self._failures.setdefault(route, []).append((status, retry_after, global_))

    @staticmethod
    def _check_route(route: str) -> None:
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")

    # -- gateway test controls -------------------------------------------------------

    def message_create(self, content: str, author_id: str = "111", channel_id: str = "555",
                       guild_id: str | None = None, mention_bot: bool = False,
                       author_bot: bool = False, username: str = "alice",
                       reply_to: str | None = None) -> dict[str, Any] | None:
        """A user writes in a channel (a DM when guild_id is None). Returns the dispatched
        `d`, or None when nothing was dispatched (no session, or the intent is missing)."""
        self.channel_guilds.setdefault(channel_id, guild_id)
        session = self.session
        needed = GUILD_MESSAGES if guild_id is not None else DIRECT_MESSAGES
        if session is None or not session.intents & needed:
            return None
        author: dict[str, Any] = {"id": author_id, "username": username, "discriminator": "0",
                                  "avatar": None, "global_name": username}
        if author_bot:
            author["bot"] = True
        stamp = self._timestamp()
        d: dict[str, Any] = {
            "id": self._snowflake(), "channel_id": channel_id, "author": author,
            "content": content, "timestamp": stamp, "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [dict(self.bot_user)] if mention_bot else [],
            "mention_roles": [], "attachments": [], "embeds": [], "components": [],
            "pinned": False, "type": 0, "flags": 0,
        }
        if guild_id is not None:
            d["guild_id"] = guild_id
            d["member"] = {"roles": [], "joined_at": stamp, "deaf": False, "mute": False}
            if not session.intents & MESSAGE_CONTENT and not mention_bot:
                d["content"] = ""  # documented: no content without the privileged intent
        if reply_to is not None:
            d["type"] = 19
            d["message_reference"] = {"type": 0, "message_id": reply_to, "channel_id": channel_id,
                                      **({"guild_id": guild_id} if guild_id else {})}
        self._known_messages.add(d["id"])
        self._dispatch(session, "MESSAGE_CREATE", d)
        return d

    def interaction(self, name: str, options: dict[str, str] | None = None,
                    user_id: str = "111", channel_id: str = "555",
                    guild_id: str | None = None, username: str = "alice") -> dict[str, Any] | None:
        """A user runs slash command `name` with string options. Returns the dispatched `d`
        (None without a session). The bot has 3 s to answer it."""
        self.channel_guilds.setdefault(channel_id, guild_id)
        session = self.session
        if session is None:
            return None
        user = {"id": user_id, "username": username, "discriminator": "0", "avatar": None,
                "global_name": username}
        token = secrets.token_urlsafe(48)
        d: dict[str, Any] = {
            "id": self._snowflake(), "application_id": self.application_id, "type": 2,
            "token": token, "version": 1, "channel_id": channel_id,
            "channel": {"id": channel_id, "type": 0 if guild_id is not None else 1},
            "data": {"id": str(int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)),
                     "name": name, "type": 1,
                     "options": [{"name": k, "type": 3, "value": v}
                                 for k, v in (options or {}).items()]},
            "locale": "en-US", "app_permissions": "0", "entitlements": [],
            "context": 0 if guild_id is not None else 1,
        }
        if guild_id is not None:
            d["guild_id"] = guild_id
            d["guild_locale"] = "en-US"
            d["member"] = {"user": user, "roles": [], "permissions": "0",
                           "joined_at": self._timestamp(), "deaf": False, "mute": False}
        else:
            d["user"] = user
        self._interactions[d["id"]] = {"token": token, "created": self.reactor.seconds(),
                                       "acknowledged": False, "channel_id": channel_id,
                                       "guild_id": guild_id}
        self._dispatch(session, "INTERACTION_CREATE", d)
        return d

    def request_heartbeat(self) -> None:
        """Op 1 from the server: the client should heartbeat at once."""
        for proto in list(self.connections):
            proto.send_json({"op": 1, "d": None, "s": None, "t": None})

    def request_reconnect(self) -> None:
        """Op 7: the client should close and resume."""
        for proto in list(self.connections):
            proto.send_json({"op": 7, "d": None, "s": None, "t": None})

    def invalidate_session(self, resumable: bool = False) -> bool:
        """Op 9 with d=resumable; a session that cannot be resumed is forgotten."""
        session = self.session
        for proto in list(self.connections):
            proto.send_json({"op": 9, "d": resumable, "s": None, "t": None})
            if not resumable:
                proto.session = None  # it may identify again
        if session is not None and not resumable:
            self._forget(session)
        return resumable

    def drop(self) -> None:
        """Abort every websocket without a close frame (sessions stay resumable)."""
        for proto in list(self._ws_protocols):
            if proto.transport is not None:
                proto.transport.abortConnection()

    def close(self, code: int, reason: str = "") -> None:
        """Close every websocket with `code` (4007 and 4009 also forget the session)."""
        for proto in list(self.connections):
            if code in (4007, 4009) and proto.session is not None:
                self._forget(proto.session)
            self._close(proto, code, reason)

    def wait_ready(self, count: int = 1, timeout: float | None = 10.0) -> Deferred[None]:
        """Fires once READY or RESUMED has been sent `count` times in total."""
        waiter: Deferred[None] = Deferred()
        if len(self.readies) >= count:
            waiter.callback(None)
            return waiter
        self._ready_waiters.append((count, waiter))
        if timeout is not None:
            waiter.addTimeout(timeout, self.reactor)

        def forget(result: Any) -> Any:
            self._ready_waiters = [(c, w) for c, w in self._ready_waiters if w is not waiter]
            return result

        return waiter.addBoth(forget)

    # -- REST ----------------------------------------------------------------------

    def render(self, request: Any) -> bytes:
        method = request.method.decode()
        path = request.path.decode()
        body, body_error = self._body(request)
        self.calls.append((method, path, body, self.reactor.seconds()))
        parts = [unquote(p) for p in path.rstrip("/").split("/")]
        match = self._match(parts)
        if match is None:
            return self._answer(request, 404, {"message": "404: Not Found", "code": 0})
        route, major, want_method, handler, args = match
        headers = self._peek_headers(route, major)
        if method != want_method:
            return self._answer(request, 405, {"message": "405: Method Not Allowed", "code": 0},
                                headers)
        if route in ("gateway_bot", "users_me", "channel_messages"):
            if request.getHeader("authorization") != f"Bot {self.bot_token}":
                return self._answer(request, 401, {"message": "401: Unauthorized", "code": 0},
                                    headers)
        failures = self._failures.get(route)
        if failures:
            status, retry_after, global_ = failures.pop(0)
            return self._injected(request, route, major, status, retry_after, global_)
        allowed, headers = self._consume(route, major)
        if not allowed:
            return self._too_many(request, headers, float(headers["X-RateLimit-Reset-After"]),
                                  global_=False)
        if body_error:
            invalid = {"code": 50109, "message": "The request body contains invalid JSON."}
            return self._answer(request, 400, invalid, headers)
        status, answer = handler(request, body if body is not None else {}, *args)
        return self._answer(request, status, answer, headers)

    def _match(self, parts: list[str]) -> tuple[str, str, str, Callable[..., Any], tuple] | None:
        if len(parts) < 3 or parts[:2] != ["", "api"]:
            return None
        versioned = parts[2] == f"v{API_VERSION}"
        rest = parts[3:] if versioned else parts[2:]
        if not versioned and parts[2].startswith("v") and parts[2][1:].isdigit():
            return None  # another API version
        if rest[:1] == ["webhooks"] and len(rest) == 3:
            webhook_id, token = rest[1], rest[2]
            if webhook_id == self.application_id:
                return ("followup", f"{webhook_id}/{token}", "POST", self._followup, (token,))
            return ("webhook", f"{webhook_id}/{token}", "POST", self._webhook,
                    (webhook_id, token))
        if not versioned:
            return None
        if rest == ["gateway", "bot"]:
            return ("gateway_bot", "", "GET", self._gateway_bot, ())
        if rest == ["users", "@me"]:
            return ("users_me", "", "GET", self._users_me, ())
        if len(rest) == 3 and rest[0] == "channels" and rest[2] == "messages":
            return ("channel_messages", rest[1], "POST", self._channel_message, (rest[1],))
        if len(rest) == 4 and rest[0] == "interactions" and rest[3] == "callback":
            return ("interaction_callback", rest[1], "POST", self._callback, (rest[1], rest[2]))
        return None

    @staticmethod
    def _body(request: Any) -> tuple[Any, bool]:
        raw = request.content.read() if request.content is not None else b""
        kind = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            raw = (request.args.get(b"payload_json") or [b""])[0]
            kind = "application/json"
        if not raw:
            return None, False
        if kind != "application/json":
            return {}, False  # Discord does not read it: the message counts as empty
        try:
            return json.loads(raw), False
        except ValueError:
            return raw.decode("utf-8", "replace"), True

    def _gateway_bot(self, request: Any, body: Any) -> tuple[int, Any]:
        return 200, {"url": self.gateway_base, "shards": 1,
                     "session_start_limit": {"total": 1000,
                                             "remaining": max(0, 999 - len(self.identifies)),
                                             "reset_after": 14400000, "max_concurrency": 1}}

    def _users_me(self, request: Any, body: Any) -> tuple[int, Any]:
        return 200, dict(self.bot_user)

    def _channel_message(self, request: Any, body: Any, channel_id: str) -> tuple[int, Any]:
        if not channel_id.isdigit():
            return 400, self._form_error({"channel_id": _error(
                "NUMBER_TYPE_COERCE", f'Value "{channel_id}" is not snowflake.')})
        problem = self._check_message(body)
        if problem is not None:
            return problem
        message = self._message(channel_id, body, dict(self.bot_user))
        self.messages.append({"channel_id": channel_id, **body})
        self._echo(message)
        return 200, message

    def _webhook(self, request: Any, body: Any, webhook_id: str, token: str) -> tuple[int, Any]:
        if webhook_id != self.webhook_id or token != self.webhook_token:
            return 404, {"message": "Unknown Webhook", "code": 10015}
        problem = self._check_message(body, webhook=True)
        if problem is not None:
            return problem
        author = {"id": self.webhook_id, "username": body.get("username") or "Captain Hook",
                  "avatar": None, "discriminator": "0000", "bot": True}
        message = self._message(self.webhook_channel_id, body, author)
        message["webhook_id"] = self.webhook_id
        self.webhook_messages.append(dict(body))
        self._echo(message)
        wait = (request.args.get(b"wait") or [b"false"])[0].decode().lower() in ("true", "1")
        return (200, message) if wait else (204, None)

    def _callback(self, request: Any, body: Any, interaction_id: str,
                  token: str) -> tuple[int, Any]:
        found = self._interactions.get(interaction_id)
        now = self.reactor.seconds()
        if found is None or found["token"] != token or (
                not found["acknowledged"] and now - found["created"] > INTERACTION_RESPONSE_WINDOW):
            return 404, {"message": "Unknown interaction", "code": 10062}
        if found["acknowledged"]:
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        if not isinstance(body, dict) or body.get("type") not in (4, 5):
            return 400, self._form_error({"type": _error(
                "INTERACTION_RESPONSE_TYPE_INVALID", "Value must be one of {4, 5}.")})
        data = body.get("data")
        if body["type"] == 4:
            problem = self._check_message(data if data is not None else {}, prefix="data")
            if problem is not None:
                return problem
        found["acknowledged"] = True
        found["acknowledged_at"] = now
        self.interaction_responses.append({"interaction_id": interaction_id, **body})
        if body["type"] == 4:
            message = self._message(found["channel_id"], data, dict(self.bot_user),
                                    guild_id=found["guild_id"])
            message.update(webhook_id=self.application_id, application_id=self.application_id)
            self._echo(message)
        return 204, None

    def _followup(self, request: Any, body: Any, token: str) -> tuple[int, Any]:
        now = self.reactor.seconds()
        found = next(((i, f) for i, f in self._interactions.items() if f["token"] == token), None)
        if found is None or not found[1]["acknowledged"] or (
                now - found[1]["created"] > INTERACTION_TOKEN_LIFETIME):
            return 404, {"message": "Unknown Webhook", "code": 10015}
        interaction_id, info = found
        problem = self._check_message(body)
        if problem is not None:
            return problem
        message = self._message(info["channel_id"], body, dict(self.bot_user),
                                guild_id=info["guild_id"])
        message.update(webhook_id=self.application_id, application_id=self.application_id)
        self.followups.append({"interaction_id": interaction_id,
                               "channel_id": info["channel_id"], **body})
        self._echo(message)
        return 200, message

    # -- validation and objects --------------------------------------------------------

    @staticmethod
    def _form_error(errors: dict[str, Any]) -> dict[str, Any]:
        return {"code": 50035, "message": "Invalid Form Body", "errors": errors}

    def _check_message(self, body: Any, webhook: bool = False,
                       prefix: str | None = None) -> tuple[int, Any] | None:
        """None when Discord would accept `body` as a message, else (status, error body)."""
        def wrap(errors: dict[str, Any]) -> tuple[int, Any]:
            return 400, self._form_error({prefix: errors} if prefix else errors)

        if not isinstance(body, dict):
            return wrap(_error("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"))
        errors: dict[str, Any] = {}
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            errors["content"] = _error("BASE_TYPE_STRING", "Could not interpret value as string.")
        elif content is not None and len(content) > MAX_CONTENT:
            errors["content"] = _too_long(MAX_CONTENT)
        embeds = body.get("embeds")
        if embeds is not None:
            embed_errors = self._check_embeds(embeds)
            if embed_errors:
                errors["embeds"] = embed_errors
        if webhook and body.get("username") is not None:
            name = str(body["username"])
            lowered = name.lower()
            if not 1 <= len(name) <= 80:
                errors["username"] = _error("BASE_TYPE_BAD_LENGTH",
                                            "Must be between 1 and 80 in length.")
            for banned in ("discord", "clyde"):
                if banned in lowered:
                    errors["username"] = _error("USERNAME_INVALID_CONTAINS",
                                                f'Username cannot contain "{banned}"')
        reference = body.get("message_reference")
        if reference is not None:
            if not isinstance(reference, dict):
                errors["message_reference"] = _error("DICT_TYPE_CONVERT",
                                                     "Only dictionaries may be used in a DictType")
            elif (str(reference.get("message_id")) not in self._known_messages
                  and reference.get("fail_if_not_exists", True) is not False):
                errors["message_reference"] = _error("MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                                     "Unknown message")
        if errors:
            return wrap(errors)
        if not (content or "").strip() and not embeds:
            return 400, {"code": 50006, "message": "Cannot send an empty message"}
        return None

    @staticmethod
    def _check_embeds(embeds: Any) -> dict[str, Any]:
        if not isinstance(embeds, list):
            return _error("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(embeds) > MAX_EMBEDS:
            return _too_long(MAX_EMBEDS)
        errors: dict[str, Any] = {}
        total = 0
        for index, embed in enumerate(embeds):
            if not isinstance(embed, dict):
                errors[str(index)] = _error("DICT_TYPE_CONVERT",
                                            "Only dictionaries may be used in a DictType")
                continue
            mine: dict[str, Any] = {}
            for key, limit in EMBED_TEXT_LIMITS.items():
                text = str(embed.get(key) or "")
                total += len(text)
                if len(text) > limit:
                    mine[key] = _too_long(limit)
            for part, key, limit in (("footer", "text", 2048), ("author", "name", 256)):
                inner = embed.get(part)
                if isinstance(inner, dict):
                    text = str(inner.get(key) or "")
                    total += len(text)
                    if len(text) > limit:
                        mine[part] = {key: _too_long(limit)}
            fields = embed.get("fields") or []
            if not isinstance(fields, list):
                mine["fields"] = _error("LIST_TYPE_CONVERT",
                                        "Only iterables may be used in a ListType")
            elif len(fields) > MAX_FIELDS:
                mine["fields"] = _too_long(MAX_FIELDS)
            else:
                field_errors: dict[str, Any] = {}
                for number, field in enumerate(fields):
                    problems: dict[str, Any] = {}
                    for key, limit in (("name", 256), ("value", 1024)):
                        text = field.get(key) if isinstance(field, dict) else None
                        if text is None or text == "":
                            problems[key] = _error("BASE_TYPE_REQUIRED", "This field is required")
                            continue
                        total += len(str(text))
                        if len(str(text)) > limit:
                            problems[key] = _too_long(limit)
                    if problems:
                        field_errors[str(number)] = problems
                if field_errors:
                    mine["fields"] = field_errors
            if mine:
                errors[str(index)] = mine
        if not errors and total > MAX_EMBED_TOTAL:
            return _error("MAX_EMBED_SIZE_EXCEEDED",
                          f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")
        return errors

    def _message(self, channel_id: str, body: dict[str, Any], author: dict[str, Any],
                 guild_id: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self._snowflake(), "type": 0, "channel_id": channel_id,
            "content": body.get("content") or "",
            "embeds": [{"type": "rich", **e} for e in body.get("embeds") or []],
            "author": author, "timestamp": self._timestamp(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": [], "components": [], "pinned": False, "flags": 0,
        }
        if guild_id is None:
            guild_id = self.channel_guilds.get(channel_id)
        if guild_id is not None:
            message["guild_id"] = guild_id
        reference = body.get("message_reference")
        if (isinstance(reference, dict)
                and str(reference.get("message_id")) in self._known_messages):
            message["type"] = 19
            message["message_reference"] = {"type": 0, "channel_id": channel_id,
                                            "message_id": str(reference["message_id"]),
                                            **({"guild_id": guild_id} if guild_id else {})}
        self._known_messages.add(message["id"])
        return message

    def _echo(self, message: dict[str, Any]) -> None:
        """Discord sends the bot a MESSAGE_CREATE for what it (or its webhook) posted."""
        session = self.session
        if not self.echo_own_messages or session is None:
            return
        needed = GUILD_MESSAGES if "guild_id" in message else DIRECT_MESSAGES
        if session.intents & needed:
            self._dispatch(session, "MESSAGE_CREATE", dict(message))

    def _snowflake(self) -> str:
        ms = max(0, int(self.reactor.seconds() * 1000) - DISCORD_EPOCH_MS)
        value = max(ms << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return str(value)

    def _timestamp(self) -> str:
        moment = datetime.fromtimestamp(self.reactor.seconds(), timezone.utc)
        return moment.isoformat(timespec="microseconds")

    # -- rate limits -------------------------------------------------------------------

    @staticmethod
    def _bucket_id(route: str) -> str:
        return hashlib.sha256(f"fake-discord:{route}".encode()).hexdigest()[:32]

    def _window(self, route: str, major: str) -> tuple[int, list[float]]:
        limit, window = self._limits.get(route, DEFAULT_LIMIT)
        now = self.reactor.seconds()
        state = self._windows.get((route, major))
        if state is None or now >= state[1]:
            state = [0, now + window]
            self._windows[(route, major)] = state
        return limit, state

    def _headers(self, route: str, limit: int, state: list[float]) -> dict[str, str]:
        reset_after = max(0.0, state[1] - self.reactor.seconds())
        return {"X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(max(0, limit - int(state[0]))),
                "X-RateLimit-Reset": f"{state[1]:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": self._bucket_id(route)}

    def _peek_headers(self, route: str, major: str) -> dict[str, str]:
        limit, state = self._window(route, major)
        return self._headers(route, limit, state)

    def _consume(self, route: str, major: str) -> tuple[bool, dict[str, str]]:
        limit, state = self._window(route, major)
        if state[0] >= limit:
            return False, self._headers(route, limit, state)
        state[0] += 1
        return True, self._headers(route, limit, state)

    def _too_many(self, request: Any, headers: dict[str, str], retry_after: float,
                  global_: bool) -> bytes:
        self.rate_limited += 1
        retry_after = max(0.001, round(retry_after, 3))
        headers = {**headers, "Retry-After": str(max(1, math.ceil(retry_after))),
                   "X-RateLimit-Scope": "global" if global_ else "user"}
        if global_:
            headers["X-RateLimit-Global"] = "true"
        return self._answer(request, 429, {"message": "You are being rate limited.",
                                           "retry_after": retry_after, "global": global_},
                            headers)

    def _injected(self, request: Any, route: str, major: str, status: int, retry_after: float,
                  global_: bool) -> bytes:
        limit, state = self._window(route, major)
        headers = self._headers(route, limit, state)
        if status == 429:
            if not global_:
                now = self.reactor.seconds()
                headers.update({"X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": f"{now + retry_after:.3f}",
                                "X-RateLimit-Reset-After": f"{retry_after:.3f}"})
            return self._too_many(request, headers, retry_after, global_)
        return self._answer(request, status, _json_error(status, route), headers)

    @staticmethod
    def _answer(request: Any, status: int, body: Any,
                headers: dict[str, str] | None = None) -> bytes:
        request.setResponseCode(status)
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        if body is None:
            return b""
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()

    # -- gateway ------------------------------------------------------------------------

    def _later(self, delay: float, function: Callable[..., Any], *args: Any) -> Any:
        if self._stopping:
            return None

        def fire() -> None:
            self._timers.discard(call)
            function(*args)

        call = self.reactor.callLater(delay, fire)
        self._timers.add(call)
        return call

    def _cancel(self, call: Any) -> None:
        if call is not None:
            self._timers.discard(call)
            if call.active():
                call.cancel()

    def _opened(self, proto: _GatewayProtocol) -> None:
        self.connects += 1
        self.connections.append(proto)
        version = proto.params.get("v", [str(API_VERSION)])[0]
        encoding = proto.params.get("encoding", ["json"])[0]
        if version != str(API_VERSION):
            self._close(proto, 4012, "Invalid API version")
            return
        if encoding != "json":
            self._close(proto, 4002, "Error while decoding payload.")
            return
        proto.send_json({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                         "s": None, "t": None})
        self._arm_heartbeat_timeout(proto)

    def _arm_heartbeat_timeout(self, proto: _GatewayProtocol) -> None:
        self._cancel(proto.heartbeat_timer)
        proto.heartbeat_timer = self._later(2 * self.heartbeat_interval_ms / 1000.0,
                                            self._heartbeat_missed, proto)

    def _heartbeat_missed(self, proto: _GatewayProtocol) -> None:
        proto.heartbeat_timer = None
        self._close(proto, 4000, "Heartbeat timeout")

    def _close(self, proto: _GatewayProtocol, code: int, reason: str = "") -> None:
        self._cancel(proto.heartbeat_timer)
        proto.heartbeat_timer = None
        if proto.state == proto.STATE_OPEN:
            proto.sendClose(code, reason or None)
            if proto.close_timer is None:  # a client that never answers the close frame
                proto.close_timer = self._later(2.0, self._abort, proto)
        else:
            self._abort(proto)

    @staticmethod
    def _abort(proto: _GatewayProtocol) -> None:
        proto.close_timer = None
        if proto.transport is not None:
            proto.transport.abortConnection()

    def _lost(self, proto: _GatewayProtocol) -> None:
        self._ws_protocols.discard(proto)
        self._cancel(proto.heartbeat_timer)
        self._cancel(proto.close_timer)
        proto.heartbeat_timer = proto.close_timer = None
        if proto in self.connections:
            self.connections.remove(proto)
        session = proto.session
        if session is not None and session.connection is proto:
            session.connection = None
            if proto.client_close_code in (1000, 1001):
                self._forget(session)  # documented: such a close ends the session

    def _forget(self, session: _Session) -> None:
        self.sessions.pop(session.id, None)
        if self.session is session:
            self.session = None
        if session.connection is not None:
            session.connection.session = None
            session.connection = None

    def _dispatch(self, session: _Session, event: str, d: Any) -> None:
        session.seq += 1
        frame = {"op": 0, "d": d, "s": session.seq, "t": event}
        session.backlog.append(frame)
        if session.connection is not None:
            session.connection.send_json(frame)

    def _mark_ready(self, kind: str) -> None:
        self.readies.append(kind)
        for count, waiter in list(self._ready_waiters):
            if len(self.readies) >= count and not waiter.called:
                waiter.callback(None)

    def _frame(self, proto: _GatewayProtocol, payload: bytes, is_binary: bool) -> None:
        try:
            if is_binary:
                raise ValueError("binary frame")
            frame = json.loads(payload.decode("utf-8"))
            if not isinstance(frame, dict) or not isinstance(frame.get("op"), int):
                raise ValueError("no opcode")
        except ValueError:
            self.bad_frames.append(payload)
            self._close(proto, 4002, "Error while decoding payload.")
            return
        op, d = frame["op"], frame.get("d")
        if op == 1:
            self.heartbeats += 1
            self._arm_heartbeat_timeout(proto)
            if not self.zombie:
                proto.send_json({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            self._identify(proto, d)
        elif op == 6:
            self._resume(proto, d)
        elif op in (3, 4, 8, 31):
            if proto.session is None:
                self._close(proto, 4003, "Not authenticated.")
            # otherwise accepted and ignored
        else:
            self.bad_frames.append(payload)
            self._close(proto, 4001, "Unknown opcode.")

    def _bad_start(self, proto: _GatewayProtocol, d: Any) -> bool:
        """Identify and Resume alike: once per connection, and an object."""
        if proto.session is not None:
            self._close(proto, 4005, "Already authenticated.")
            return True
        if not isinstance(d, dict):
            self.bad_frames.append(d)
            self._close(proto, 4002, "Error while decoding payload.")
            return True
        return False

    def _identify(self, proto: _GatewayProtocol, d: Any) -> None:
        if self._bad_start(proto, d):
            return
        if d.get("token") != self.bot_token:
            self._close(proto, 4004, "Authentication failed.")
            return
        intents = d.get("intents")
        if type(intents) is not int or not 0 <= intents < INTENTS_LIMIT:
            self._close(proto, 4013, "Invalid intent(s).")
            return
        if intents & MESSAGE_CONTENT and not self.message_content_allowed:
            self._close(proto, 4014, "Disallowed intent(s).")
            return
        session = _Session(secrets.token_hex(16), intents)
        self.sessions[session.id] = session
        self.identifies.append(d)
        self._attach(proto, session)
        ready: dict[str, Any] = {
            "v": API_VERSION, "user": dict(self.bot_user), "guilds": [],
            "session_id": session.id, "resume_gateway_url": self.gateway_base,
            "application": {"id": self.application_id, "flags": 0},
        }
        if d.get("shard") is not None:
            ready["shard"] = d["shard"]
        self._dispatch(session, "READY", ready)
        self._mark_ready("READY")

    def _resume(self, proto: _GatewayProtocol, d: Any) -> None:
        if self._bad_start(proto, d):
            return
        self.resumes.append(d)
        if d.get("token") != self.bot_token:
            self._close(proto, 4004, "Authentication failed.")
            return
        session = self.sessions.get(str(d.get("session_id")))
        if session is None:
            proto.send_json({"op": 9, "d": False, "s": None, "t": None})
            return
        seq = d.get("seq")
        seq = 0 if seq is None else seq
        if type(seq) is not int or seq > session.seq:
            self._close(proto, 4007, "Invalid seq.")
            return
        self._attach(proto, session)
        for frame in session.backlog:
            if frame["s"] > seq:
                proto.send_json(frame)
        self._dispatch(session, "RESUMED", {})
        self._mark_ready("RESUMED")

    def _attach(self, proto: _GatewayProtocol, session: _Session) -> None:
        old = session.connection
        if old is not None and old is not proto:
            old.session = None  # a newer connection took the session over
            self._close(old, 4000, "Session resumed elsewhere")
        session.connection = proto
        proto.session = session
        self.session = session
