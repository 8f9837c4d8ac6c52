# tests: tests/test_txclient.py
"""A Twisted JSON-RPC client for code that runs inside a reactor (the REPL, tests).

    client = await connect_daemon(reactor, project="/path/to/project")
    status = await client.call("daemon.status")
    client.on_event = lambda params: print(params["topic"])
    await client.call("events.subscribe", topics=["task:*"])
    await client.close()
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError
from twisted.protocols.basic import LineOnlyReceiver

from aiwg.errors import ConnectionClosed, DaemonNotRunning, RequestTimeout, RpcError
from aiwg.paths import ProjectPaths


class DaemonProtocol(LineOnlyReceiver):
    """Correlates replies by id; hands server notifications to `on_notification`."""

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self, reactor: Any, timeout: float | None) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Deferred, Any]] = {}
        self._closed: list[Deferred] = []
        self.connected_ = False
        self.on_notification: Callable[[str, Any], None] | None = None
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    def connectionMade(self) -> None:
        self.connected_ = True

    def call(self, method: str, /, **params: Any) -> Deferred:
        """A Deferred firing with the result, or failing with RpcError/RequestTimeout."""
        if not self.connected_:
            raise ConnectionClosed("Not connected to daemon")
        req_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": req_id}
        if params:
            message["params"] = params
        d: Deferred = Deferred()
        timer = None
        if self._timeout is not None:
            timer = self._reactor.callLater(self._timeout, self._expire, req_id, method)
        self._pending[req_id] = (d, timer)
        self.sendLine(json.dumps(message, separators=(",", ":")).encode())
        return d

    def notify(self, method: str, /, **params: Any) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            message["params"] = params
        self.sendLine(json.dumps(message, separators=(",", ":")).encode())

    def emit(self, topic: str, payload: dict[str, Any] | None = None) -> Deferred:
        return self.call("event.emit", topic=topic, payload=payload or {})

    def _expire(self, req_id: int, method: str) -> None:
        entry = self._pending.pop(req_id, None)
        if entry is not None:
            entry[0].errback(RequestTimeout(f"Request timeout: {method} ({self._timeout}s)"))

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if "id" not in message and "method" in message:
            params = message.get("params")
            if message["method"] == "event" and self.on_event is not None:
                self.on_event(params)
            elif self.on_notification is not None:
                self.on_notification(message["method"], params)
            return
        entry = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if entry is None:
            return
        d, timer = entry
        if timer is not None and timer.active():
            timer.cancel()
        if "error" in message:
            error = message["error"] or {}
            d.errback(RpcError(int(error.get("code", 0)), str(error.get("message", "")), error.get("data")))
        else:
            d.callback(message.get("result"))

    def connectionLost(self, reason: Any = None) -> None:
        self.connected_ = False
        pending, self._pending = self._pending, {}
        for d, timer in pending.values():
            if timer is not None and timer.active():
                timer.cancel()
            d.errback(ConnectionClosed("Connection closed"))
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    def when_closed(self) -> Deferred:
        d: Deferred = Deferred()
        if not self.connected_:
            d.callback(None)
        else:
            self._closed.append(d)
        return d

    def close(self) -> Deferred:
        d = self.when_closed()
        if self.transport is not None:
            self.transport.loseConnection()
        return d


async def connect_daemon(
    reactor: Any,
    project: str | os.PathLike[str] | None = None,
    *,
    socket_path: str | os.PathLike[str] | None = None,
    timeout: float | None = 30.0,
) -> DaemonProtocol:
    """Connect to a project's daemon; raises DaemonNotRunning if nothing answers."""
    paths = ProjectPaths.for_project(project)
    path = os.fspath(socket_path) if socket_path else os.fspath(paths.client_socket())
    endpoint = UNIXClientEndpoint(reactor, path, timeout=10)
    protocol = DaemonProtocol(reactor, timeout)
    from twisted.internet.protocol import Factory

    try:
        return await endpoint.connect(Factory.forProtocol(lambda: protocol))  # type: ignore[no-any-return]
    except ConnectError:
        raise DaemonNotRunning(
            f"no daemon is running for {paths.root}; start it with `aiwg daemon start`"
        ) from None
