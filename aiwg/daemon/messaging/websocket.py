"""A websocket client connection on autobahn for the Slack and Discord bridges.

`open_socket` connects to a ws:// or wss:// URL and hands each text frame and the
close to the bridge's callbacks; the returned Deferred fires with the protocol
once the opening handshake is done (or fails with ConnectionError). TLS checks
the server's certificate against the URL's host name.
"""

from __future__ import annotations

from typing import Any, Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred

#: Seconds allowed for TCP connect plus the opening handshake.
OPEN_TIMEOUT = 30


class _Socket(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.factory.on_text(self, payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed(self, code, reason or "")


class _Factory(WebSocketClientFactory):
    protocol = _Socket
    noisy = False  # no "Starting factory" lines in the daemon's log at every reconnect

    def __init__(self, url: str, on_text: Callable[[Any, bytes], None],
                 on_close: Callable[[Any, int | None, str], None]) -> None:
        super().__init__(url)
        self.setProtocolOptions(openHandshakeTimeout=OPEN_TIMEOUT, closeHandshakeTimeout=5,
                                autoPingInterval=30, autoPingTimeout=15)
        self.on_text = on_text
        self._on_close = on_close
        self.ready: Deferred = Deferred(self._cancel)
        self.connector: Any = None
        self.cancelled = False
        self._open = False

    def _cancel(self, _: Deferred) -> None:
        """A bridge stopping mid-connect: no session may come alive after it."""
        self.cancelled = True
        if self.connector is not None:
            self.connector.disconnect()

    def opened(self, proto: Any) -> None:
        if self.cancelled:
            proto.dropConnection(abort=True)
            return
        self._open = True
        if not self.ready.called:
            self.ready.callback(proto)

    def closed(self, proto: Any, code: int | None, reason: str) -> None:
        if self.cancelled:
            return
        if not self._open:
            if not self.ready.called:
                self.ready.errback(ConnectionError(f"websocket handshake failed ({reason or code})"))
            return
        self._on_close(proto, code, reason)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(ConnectionError(f"could not connect: {reason.getErrorMessage()}"))


def open_socket(reactor: Any, url: str, on_text: Callable[[Any, bytes], None],
                on_close: Callable[[Any, int | None, str], None]) -> Deferred:
    factory = _Factory(url, on_text, on_close)
    if factory.isSecure:
        from twisted.internet import ssl

        options = ssl.optionsForClientTLS(factory.host)
        factory.connector = reactor.connectSSL(factory.host, factory.port, factory, options, timeout=OPEN_TIMEOUT)
    else:
        factory.connector = reactor.connectTCP(factory.host, factory.port, factory, timeout=OPEN_TIMEOUT)
    return factory.ready
