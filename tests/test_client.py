"""DaemonClient (blocking, stdlib) and the Twisted client against a real daemon."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import pytest_twisted

from aiwg.client import DaemonClient
from aiwg.errors import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    ConnectionClosed,
    DaemonNotRunning,
    RequestTimeout,
    RpcError,
)
from tests.conftest import Project


def test_not_running_gives_the_documented_message(project: Project) -> None:
    with pytest.raises(DaemonNotRunning) as caught:
        DaemonClient(project.root).connect()
    assert str(caught.value) == (
        f"no daemon is running for {project.root}; start it with `aiwg daemon start`"
    )


def test_call_emit_and_typed_errors(daemon: Project) -> None:
    with DaemonClient(daemon.root) as client:
        assert client.ping()["pong"] is True
        assert client.emit("deployment:complete", {"version": "1.2.3"})["published"] is True
        recent = client.call("events.recent", topic="deployment:*")
        assert recent[-1]["payload"] == {"version": "1.2.3"}
        with pytest.raises(RpcError) as unknown:
            client.call("no.such")
        assert unknown.value.code == METHOD_NOT_FOUND
        with pytest.raises(RpcError) as bad:
            client.emit("task:completed")
        assert bad.value.code == INVALID_PARAMS and "reserved" in bad.value.message
        # A method parameter called "method" does not clash with call()'s own argument.
        with pytest.raises(RpcError, match="Unknown parameter 'method'"):
            client.call("ping", method="x")


def test_project_from_environment_and_socket_override(daemon: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWG_PROJECT", str(daemon.root))
    with DaemonClient() as client:
        assert client.ping()["pid"] == daemon.pid()
    monkeypatch.delenv("AIWG_PROJECT")
    monkeypatch.setenv("AIWG_DAEMON_SOCKET", str(daemon.paths.default_socket))
    with DaemonClient(tmp_path) as client:
        assert client.ping()["pid"] == daemon.pid()
    monkeypatch.setenv("AIWG_DAEMON_SOCKET", str(tmp_path / "nothing.sock"))
    with pytest.raises(DaemonNotRunning, match="AIWG_DAEMON_SOCKET"):
        DaemonClient(tmp_path).connect()


def test_subscribed_events_arrive_and_notifications_queue_during_calls(daemon: Project) -> None:
    with DaemonClient(daemon.root, timeout=5) as listener, DaemonClient(daemon.root) as emitter:
        assert listener.subscribe(["deploy:*"]) == {"subscribed": ["deploy:*"]}
        emitter.emit("deploy:one", {"n": 1})
        emitter.emit("other:thing", {})
        emitter.emit("deploy:two", {"n": 2})
        listener.ping()  # notifications that arrive first are queued, not lost
        events = list(listener.events(timeout=0.5))
        assert [e["topic"] for e in events] == ["deploy:one", "deploy:two"]
        assert events[0]["payload"] == {"n": 1} and events[0]["source"] == "client"


def test_call_many_pipelines_calls_and_keeps_their_order(daemon: Project) -> None:
    with DaemonClient(daemon.root) as client:
        results = client.call_many([("ping", {})] * 250 + [("events.recent", {"limit": 1})], window=16)
        assert len(results) == 251 and all(r["pong"] is True for r in results[:250])
        assert isinstance(results[-1], list)
        with pytest.raises(RpcError) as caught:
            client.call_many([("ping", {}), ("no.such", {}), ("also.missing", {}), ("ping", {})])
        assert caught.value.code == METHOD_NOT_FOUND and "no.such" in caught.value.message
        assert client.ping()["pong"] is True  # every reply was read: the connection is in step
        assert client.call_many([]) == []


def test_call_many_matches_replies_that_arrive_out_of_order(tmp_path: Path) -> None:
    """A server that answers each window in reverse: results still follow the calls."""
    import json

    path = tmp_path / "reverse.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    windows: list[int] = []

    def serve() -> None:
        conn, _ = server.accept()
        buffer = b""
        answered = 0
        while answered < 10:
            buffer += conn.recv(65536)
            lines, _, buffer = buffer.rpartition(b"\n")
            requests = [json.loads(line) for line in lines.split(b"\n") if line]
            windows.append(len(requests))
            for request in reversed(requests):
                reply = {"jsonrpc": "2.0", "id": request["id"], "result": request["params"]["n"]}
                conn.sendall(json.dumps(reply).encode() + b"\n")
            answered += len(requests)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with DaemonClient(tmp_path, socket_path=path, timeout=5) as client:
            assert client.call_many([("echo", {"n": n}) for n in range(10)], window=4) == list(range(10))
    finally:
        thread.join(5)
        server.close()
    assert max(windows) <= 4  # never more than the window in flight


def test_timeout_raises_request_timeout(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    thread.start()
    try:
        with DaemonClient(tmp_path, socket_path=path, timeout=0.2) as client:
            with pytest.raises(RequestTimeout, match="ping"):
                client.ping()
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_server_closing_raises_connection_closed(tmp_path: Path) -> None:
    path = tmp_path / "closer.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(100)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with DaemonClient(tmp_path, socket_path=path, timeout=5) as client:
            with pytest.raises(ConnectionClosed):
                client.ping()
    finally:
        thread.join(5)
        server.close()


@pytest_twisted.ensureDeferred
async def test_twisted_client(daemon: Project) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from aiwg.txclient import connect_daemon

    client = await connect_daemon(reactor, daemon.root, timeout=5)
    try:
        assert (await client.call("ping"))["pid"] == daemon.pid()
        got: Deferred = Deferred()
        client.on_event = lambda params: got.callback(params) if not got.called else None
        await client.call("events.subscribe", topics=["tx:*"])
        await client.emit("tx:hello", {"a": 1})
        event = await got
        assert event["topic"] == "tx:hello" and event["payload"] == {"a": 1}
        with pytest.raises(RpcError):
            await client.call("nope")
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_twisted_client_not_running(project: Project) -> None:
    from twisted.internet import reactor

    from aiwg.txclient import connect_daemon

    with pytest.raises(DaemonNotRunning):
        await connect_daemon(reactor, project.root)
