# tests: tests/daemon/test_ipc_socket.py
"""A listening Unix socket that removes its file only while the file is still
its own. Twisted's port unlinks its path when it closes, whatever is there by
then: a file someone deleted (a traceback at stop) or a socket bound since by
someone else (theirs gone).

Its connections read with plain recv(): Twisted's Unix transport reads with
recvmsg() to take file descriptors passed over the socket, which the daemon's
protocol never uses (the kernel closes any a client sends) and which costs a
noticeable share of a small request's time."""

from __future__ import annotations

import os
from typing import Any

import errno

from twisted.internet import main, tcp, unix

from aiwg.paths import file_identity


class PlainServer(unix.Server):
    """A Unix server connection that reads bytes only (no ancillary data)."""

    def doRead(self) -> Any:
        try:
            data = self.socket.recv(self.bufferSize)
        except BlockingIOError:
            return None
        except InterruptedError:
            return None  # the reactor calls again: the socket is still readable
        except OSError as exc:
            return None if exc.errno == errno.EWOULDBLOCK else main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        return self.protocol.dataReceived(data)


class OwnedSocketPort(unix.Port):
    """unix.Port that remembers the inode it bound, with PlainServer connections."""

    bound: tuple[int, int] | None = None
    transport = PlainServer

    def __init__(self, fileName: str, *args: Any) -> None:
        super().__init__(fileName, *args)
        self.path = fileName

    def startListening(self) -> None:
        super().startListening()
        self.bound = file_identity(self.path, follow=False)

    def owns_path(self) -> bool:
        """Whether the file at our path is still the socket we bound."""
        return self.bound is not None and file_identity(self.path, follow=False) == self.bound

    def connectionLost(self, reason: Any) -> None:
        if self.owns_path():
            os.unlink(self.path)
        if self.lockFile is not None:
            self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)


class OwnedSocketListener:
    """What UNIXServerEndpoint needs of a reactor to listen: `listenUNIX`, which
    makes an OwnedSocketPort on the given reactor."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenUNIX(self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> OwnedSocketPort:
        port = OwnedSocketPort(address, factory, backlog, mode, self._reactor, wantPID)
        port.startListening()
        return port
