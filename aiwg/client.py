# tests: tests/test_client.py
"""DaemonClient: a blocking JSON-RPC client for scripts and the CLI. Stdlib only.

    from aiwg.client import DaemonClient

    with DaemonClient() as client:              # the project in the cwd
        client.emit("deployment:complete", {"version": "1.2.3"})
        print(client.call("daemon.status")["health"])
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections import deque
from pathlib import Path
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any, Callable, Iterable, Iterator

from aiwg.errors import (
    ConnectionClosed,
    DaemonNotRunning,
    RequestTimeout,
    RpcError,
)
from aiwg.paths import SOCKET_ENV, ProjectPaths
from aiwg.procfs import TASK_MARKER

DEFAULT_TIMEOUT = 30.0


class DaemonClient:
    """One connection to a project's daemon.

    `project` defaults to $AIWG_PROJECT or the current directory; `socket_path`
    (or $AIWG_DAEMON_SOCKET) overrides where to connect. Server-sent
    notifications that arrive while waiting for a reply are kept in
    `notifications` (or passed to `on_notification`).
    """

    def __init__(
        self,
        project: str | os.PathLike[str] | None = None,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        on_notification: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.paths = ProjectPaths.for_project(project)
        self.socket_path = Path(socket_path) if socket_path else self.paths.client_socket()
        self.timeout = timeout
        self.on_notification = on_notification
        self.notifications: deque[tuple[str, Any]] = deque(maxlen=10000)
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)

    # -- connection --------------------------------------------------------

    def connect(self) -> "DaemonClient":
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            sock.close()
            raise DaemonNotRunning(self._not_running_message(exc)) from None
        except socket.timeout:
            sock.close()
            raise RequestTimeout(f"timed out connecting to {self.socket_path}") from None
        except PermissionError as exc:
            sock.close()
            raise DaemonNotRunning(
                f"cannot connect to {self.socket_path}: {exc.strerror} "
                "(the socket is private to the user who started the daemon)"
            ) from None
        except OSError as exc:  # e.g. a path longer than a socket path may be
            sock.close()
            raise DaemonNotRunning(f"cannot connect to {self.socket_path}: {exc}") from None
        self._sock = sock
        return self

    def _not_running_message(self, exc: OSError) -> str:
        if os.environ.get(SOCKET_ENV) and str(self.socket_path) == os.environ[SOCKET_ENV]:
            return (
                f"no daemon answers on {self.socket_path} (from ${SOCKET_ENV}): "
                f"{exc.strerror or exc}"
            )
        from aiwg import instance

        pid = instance.holder(self.paths)
        if pid is not None:  # alive, but its socket is gone or it does not accept
            return (
                f"the daemon (pid {pid or 'unknown'}) for {self.paths.root} does not answer on "
                f"{self.socket_path}: {exc.strerror or exc}; a deleted socket is put back within "
                "a few seconds, else restart it with `aiwg daemon restart`"
            )
        return (
            f"no daemon is running for {self.paths.root}; "
            "start it with `aiwg daemon start`"
        )

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer = b""

    # Same name as AIWG's Node client.
    disconnect = close

    def __enter__(self) -> "DaemonClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -------------------------------------------------------------

    def call(self, method: str, /, **params: Any) -> Any:
        """Call `method` with named params; return its result or raise RpcError."""
        return self.request(method, params, timeout=self.timeout)

    def request(
        self, method: str, params: dict[str, Any] | list[Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        sock = self._require()
        req_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": req_id}
        if params:
            message["params"] = params
        self._send(sock, message)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline, method)
            if "method" in reply and "id" not in reply:
                self._notification(reply)
                continue
            if reply.get("id") != req_id:
                if reply.get("id") is None and "error" in reply:
                    # The daemon could not read our request (e.g. a parse error): the
                    # only request in flight on this blocking client is ours.
                    raise _rpc_error(reply)
                continue  # a late reply to a request that timed out
            if "error" in reply:
                raise _rpc_error(reply)
            return reply.get("result")

    def call_many(
        self, calls: Iterable[tuple[str, dict[str, Any]]], *, window: int = 100
    ) -> list[Any]:
        """Make many calls without waiting for each reply before sending the next
        (pipelining): up to `window` requests are in flight at once, so that a
        burst of calls costs about one round trip per window, not one per call.
        Returns the results in the order of `calls`. If any call failed, the
        first such RpcError is raised, once every reply is in."""
        requests = [(method, params) for method, params in calls]
        sock = self._require()
        window = max(1, window)
        results: list[Any] = [None] * len(requests)
        errors: dict[int, RpcError] = {}
        waiting: dict[Any, int] = {}  # request id → its index in `requests`
        sent = 0
        while sent < len(requests) or waiting:
            if sent < len(requests) and len(waiting) <= window // 2:
                batch = []
                while sent < len(requests) and len(waiting) < window:
                    req_id = next(self._ids)
                    method, params = requests[sent]
                    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": req_id}
                    if params:
                        message["params"] = params
                    batch.append(json.dumps(message, separators=(",", ":")).encode() + b"\n")
                    waiting[req_id] = sent
                    sent += 1
                self._send_bytes(sock, b"".join(batch))
            what = requests[min(waiting.values())][0]
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            reply = self._read_message(deadline, what)
            if "method" in reply and "id" not in reply:
                self._notification(reply)
                continue
            index = waiting.pop(reply.get("id"), None)
            if index is None:
                if reply.get("id") is None and "error" in reply:
                    raise _rpc_error(reply)  # the daemon could not read one of them
                continue  # a late reply to a request that timed out
            if "error" in reply:
                errors[index] = _rpc_error(reply)
            else:
                results[index] = reply.get("result")
        if errors:
            raise errors[min(errors)]
        return results

    def notify(self, method: str, /, **params: Any) -> None:
        """Send a JSON-RPC notification: no reply is expected or read."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            message["params"] = params
        self._send(self._require(), message)

    def emit(self, topic: str, payload: dict[str, Any] | None = None) -> Any:
        """Publish a custom event (e.g. `deployment:complete`) on the daemon's bus.

        Run inside an agent's task (AIWG_TASK_ID is set), the event names that task,
        so rules it fires count one level deeper in the automation chain."""
        task_id = os.environ.get(TASK_MARKER)
        if task_id:
            return self.call("event.emit", topic=topic, payload=payload or {}, taskId=task_id)
        return self.call("event.emit", topic=topic, payload=payload or {})

    def ping(self) -> Any:
        return self.call("ping")

    # -- events ------------------------------------------------------------

    def subscribe(self, topics: list[str] | tuple[str, ...] = ("*",)) -> Any:
        return self.call("events.subscribe", topics=list(topics))

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield subscribed events as they arrive; stops after `timeout` seconds of silence."""
        while True:
            while self.notifications:
                name, params = self.notifications.popleft()
                if name == "event":
                    yield params
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                message = self._read_message(deadline, "events")
            except RequestTimeout:
                return
            if "method" in message and "id" not in message and message["method"] == "event":
                yield message.get("params") or {}

    # -- plumbing ----------------------------------------------------------

    def _require(self) -> socket.socket:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        return self._sock

    def _send(self, sock: socket.socket, message: dict[str, Any]) -> None:
        self._send_bytes(sock, json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def _send_bytes(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise ConnectionClosed(f"the daemon closed the connection: {exc}") from None

    def _read_message(self, deadline: float | None, what: str) -> dict[str, Any]:
        sock = self._require()
        while b"\n" not in self._buffer:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(f"Request timeout: {what} ({self.timeout}s)")
                sock.settimeout(remaining)
            else:
                sock.settimeout(None)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise RequestTimeout(f"Request timeout: {what} ({self.timeout}s)") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.close()
                raise ConnectionClosed("Connection closed by the daemon")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise ConnectionClosed(f"Invalid JSON from daemon: {line[:80]!r}") from None
        if isinstance(message, list):  # batch replies are not used by this client
            return {"jsonrpc": "2.0", "result": message, "id": None}
        return message

    def _notification(self, message: dict[str, Any]) -> None:
        if self.on_notification is not None:
            self.on_notification(message["method"], message.get("params"))
        else:
            self.notifications.append((message["method"], message.get("params")))


def _rpc_error(reply: dict[str, Any]) -> RpcError:
    error = reply["error"] or {}
    return RpcError(int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))
