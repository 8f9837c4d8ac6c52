"""A loopback stand-in for the Telegram Bot API, following its documented behaviour.

`https://api.telegram.org/bot<token>/<method>` becomes
`http://127.0.0.1:<port>/bot<token>/<method>`. Parameters are read from the query
string, a urlencoded form or a JSON body; method names are case-insensitive;
every answer is `{"ok": true, "result": …}` or `{"ok": false, "error_code": N,
"description": "…", "parameters"?: {"retry_after": S}}`.

- getUpdates holds the request up to `timeout` seconds and answers early when an
  update is injected; an update counts as confirmed (and is dropped) once a
  later call's `offset` is above its `update_id`; a second poller while one is
  waiting gets 409 "Conflict: terminated by other getUpdates request …".
- sendMessage refuses text over 4,096 characters (400 "message is too long")
  and records what it accepted.
- `fail_next(method, status, retry_after=None)` makes the next call of a method
  fail, e.g. 429 with retry_after.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import parse_qs

from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

MAX_TEXT = 4096


class FakeTelegram(Resource):
    isLeaf = True

    def __init__(self, token: str, reactor: Any = default_reactor) -> None:
        super().__init__()
        self.token = token
        self.reactor = reactor
        self.updates: list[dict[str, Any]] = []
        self.next_update_id = 1000
        self.next_message_id = 1
        self.sent: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: dict[str, list[tuple[int, int | None]]] = {}
        self._waiting: tuple[Any, dict[str, Any], Any] | None = None
        self.port: Any = None

    # -- test controls ----------------------------------------------------------

    def listen(self) -> str:
        site = Site(self)
        site.timeOut = None  # no idle timer per connection: tests end with none pending
        self.port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def stop(self) -> Any:
        if self._waiting is not None:
            request, _, call = self._waiting
            self._waiting = None
            if call.active():
                call.cancel()
            self._answer(request, 200, {"ok": True, "result": []})
        return self.port.stopListening() if self.port is not None else None

    def message(self, text: str, user_id: int = 111, chat_id: int | None = None,
                chat_type: str = "private", username: str = "alice") -> dict[str, Any]:
        """Inject a user's message; a waiting getUpdates answers at once."""
        self.next_update_id += 1
        update = {
            "update_id": self.next_update_id,
            "message": {
                "message_id": self.next_message_id,
                "date": int(self.reactor.seconds()),
                "chat": {"id": chat_id if chat_id is not None else user_id, "type": chat_type},
                "from": {"id": user_id, "is_bot": False, "first_name": username, "username": username},
                "text": text,
            },
        }
        self.next_message_id += 1
        self.updates.append(update)
        if self._waiting is not None:
            request, params, call = self._waiting
            self._waiting = None
            if call.active():
                call.cancel()
            self._answer(request, 200, {"ok": True, "result": self._pending(params)})
        return update

    def drop_poll(self) -> None:
        """Cut the waiting getUpdates connection without an answer (a lost network)."""
        if self._waiting is not None:
            request, _, call = self._waiting
            self._waiting = None
            if call.active():
                call.cancel()
            request.transport.abortConnection()

    def fail_next(self, method: str, status: int, description: str = "", retry_after: int | None = None) -> None:
        self.failures.setdefault(method.lower(), []).append((status, retry_after))
        if description:
            self._descriptions = getattr(self, "_descriptions", {})
            self._descriptions[method.lower()] = description

    # -- the API -----------------------------------------------------------------

    def render(self, request: Any) -> Any:
        path = request.path.decode()
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return self._answer(request, 404, {"ok": False, "error_code": 404, "description": "Not Found"}, now=True)
        method = path[len(prefix):].lower()
        params = self._params(request)
        self.calls.append((method, params))
        failures = self.failures.get(method)
        if failures:
            status, retry_after = failures.pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": status,
                                    "description": getattr(self, "_descriptions", {}).get(method) or _reason(status, retry_after)}
            if retry_after is not None:
                body["parameters"] = {"retry_after": retry_after}
            return self._answer(request, status, body, now=True)
        if method == "getupdates":
            return self._get_updates(request, params)
        if method == "sendmessage":
            return self._send_message(request, params)
        if method == "getme":
            return self._answer(request, 200, {"ok": True, "result": {"id": 42, "is_bot": True, "username": "aiwg_test_bot"}}, now=True)
        return self._answer(request, 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}, now=True)

    def _params(self, request: Any) -> dict[str, Any]:
        params: dict[str, Any] = {k.decode(): v[-1].decode() for k, v in request.args.items()}
        body = request.content.read() if request.content is not None else b""
        kind = (request.getHeader("content-type") or "").split(";")[0].strip()
        if body and kind == "application/json":
            params.update(json.loads(body))
        elif body and kind == "application/x-www-form-urlencoded":
            params.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
        return params

    def _pending(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        limit = int(params.get("limit", 100))
        return self.updates[:limit]

    def _get_updates(self, request: Any, params: dict[str, Any]) -> Any:
        offset = params.get("offset")
        if offset is not None:
            self.updates = [u for u in self.updates if u["update_id"] >= int(offset)]  # confirmed
        if self._waiting is not None:
            other, _, call = self._waiting
            self._waiting = None
            if call.active():
                call.cancel()
            self._answer(other, 409, {"ok": False, "error_code": 409, "description":
                                      "Conflict: terminated by other getUpdates request; make sure that only "
                                      "one bot instance is running"})
        found = self._pending(params)
        timeout = float(params.get("timeout", 0))
        if found or timeout <= 0:
            return self._answer(request, 200, {"ok": True, "result": found}, now=True)
        call = self.reactor.callLater(timeout, self._expire, request)
        self._waiting = (request, params, call)
        request.notifyFinish().addErrback(lambda _: self._gone(request))
        return NOT_DONE_YET

    def _expire(self, request: Any) -> None:
        if self._waiting is not None and self._waiting[0] is request:
            self._waiting = None
            self._answer(request, 200, {"ok": True, "result": []})

    def _gone(self, request: Any) -> None:
        if self._waiting is not None and self._waiting[0] is request:
            _, _, call = self._waiting
            self._waiting = None
            if call.active():
                call.cancel()

    def _send_message(self, request: Any, params: dict[str, Any]) -> Any:
        text = str(params.get("text", ""))
        if "chat_id" not in params or not text:
            return self._answer(request, 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}, now=True)
        parsed = html.unescape(text) if str(params.get("parse_mode", "")).upper() == "HTML" else text
        if len(parsed) > MAX_TEXT:  # counted after entity parsing
            return self._answer(request, 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}, now=True)
        message = {"message_id": self.next_message_id, "date": int(self.reactor.seconds()),
                   "chat": {"id": int(params["chat_id"]), "type": "private"}, "text": text}
        self.next_message_id += 1
        self.sent.append({**params, "text": text})
        return self._answer(request, 200, {"ok": True, "result": message}, now=True)

    @staticmethod
    def _answer(request: Any, status: int, body: dict[str, Any], now: bool = False) -> Any:
        data = json.dumps(body).encode()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        if now:
            return data
        request.write(data)
        request.finish()
        return None


def _reason(status: int, retry_after: int | None) -> str:
    if status == 429:
        return f"Too Many Requests: retry after {retry_after or 1}"
    return {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden: bot was blocked by the user",
            409: "Conflict", 502: "Bad Gateway"}.get(status, "Error")


def wait_deferred(seconds: float) -> Deferred:
    from twisted.internet import task

    return task.deferLater(default_reactor, seconds, lambda: None)
