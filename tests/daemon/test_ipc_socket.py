"""The IPC server's socket file: bound again if deleted while the daemon runs,
never removed at stop unless it is still ours."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from aiwg.daemon.ipc.server import IpcFactory, IpcServer
from aiwg.daemon.ipc.rpc import CallContext, MethodTable, Namespace, method


class Echo(Namespace):
    @method(description="Say hello.")
    def jsonrpc_hello(self, ctx: CallContext) -> str:
        return "hello"


def make_server(path: Path) -> IpcServer:
    table = MethodTable()
    table.add("demo", Echo())
    return IpcServer(reactor=reactor, socket_path=path, pointer_file=None, factory=IpcFactory(table, 65536))


def call(sock: socket.socket) -> Any:
    sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "demo.hello"}\n')
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(4096)
    return json.loads(data)["result"]


def connected(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(os.fspath(path))
    return sock


@pytest.fixture
def server(tmp_path: Path):
    path = tmp_path / "run" / "d.sock"
    server = make_server(path)
    server.privilegedStartService()
    server.startService()
    yield server
    if server.running:
        pytest_twisted.blockon(server.stopService())


@pytest_twisted.ensureDeferred
async def test_a_deleted_socket_is_bound_again_and_open_connections_live_on(server: IpcServer) -> None:
    path = server.socket_path
    old = connected(path)
    assert await deferToThread(call, old) == "hello"  # accepted, and in use
    os.unlink(path)
    server.check_socket()
    assert server.rebinds == 1 and server.health_issues() == []
    assert stat_is_socket(path) and (path.stat().st_mode & 0o777) == 0o600
    fresh = connected(path)
    assert await deferToThread(call, fresh) == "hello"
    assert await deferToThread(call, old) == "hello"  # the connection made before carries on
    fresh.close()
    old.close()
    await server.stopService()
    assert not path.exists()  # the new socket is ours: removed at stop


@pytest_twisted.ensureDeferred
async def test_a_file_put_in_its_place_is_reported_and_left_alone(server: IpcServer) -> None:
    path = server.socket_path
    os.unlink(path)
    path.write_text("someone else's")
    server.check_socket()
    [issue] = server.health_issues()
    assert str(path) in issue and "replaced" in issue
    await server.stopService()
    assert path.read_text() == "someone else's"  # not removed at stop: not ours


@pytest_twisted.ensureDeferred
async def test_stop_after_the_socket_was_deleted_is_quiet(server: IpcServer, caplog: Any) -> None:
    os.unlink(server.socket_path)
    await server.stopService()
    assert "Traceback" not in caplog.text and "FileNotFoundError" not in caplog.text


def stat_is_socket(path: Path) -> bool:
    import stat

    return stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest_twisted.ensureDeferred
async def test_the_pointer_file_of_a_long_path_is_put_back(tmp_path: Path) -> None:
    pointer = tmp_path / "project" / "daemon.sock.path"
    pointer.parent.mkdir()
    table = MethodTable()
    table.add("demo", Echo())
    server = IpcServer(reactor=reactor, socket_path=tmp_path / "run" / "d.sock", pointer_file=pointer,
                       factory=IpcFactory(table, 65536))
    server.privilegedStartService()
    server.startService()
    try:
        assert pointer.read_text() == f"{server.socket_path}\n"
        pointer.unlink()
        server.check_socket()  # the socket is fine; the pointer to it comes back
        assert pointer.read_text() == f"{server.socket_path}\n"
        os.unlink(server.socket_path)
        pointer.parent.rename(tmp_path / "gone")  # a whole .aiwg/daemon removed
        server.check_socket()
        assert pointer.read_text() == f"{server.socket_path}\n" and server.rebinds == 1
        assert server.health_issues() == []
    finally:
        await server.stopService()
    assert not pointer.exists() and not server.socket_path.exists()
