"""The floor for bench/run.py: a bare Twisted LineReceiver that echoes each line.

    python bench/echo_server.py /tmp/x/echo.sock

Listens on the given Unix socket with the default reactor, prints one line
`ready <reactor class>` on stdout once it accepts connections, and runs until
SIGTERM/SIGINT. No JSON, no dispatch, no logging: whatever the daemon costs on
top of this is the daemon's own cost.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Echo(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024  # the daemon's default ipc.max_line_bytes

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: echo_server.py SOCKET_PATH")
    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    # Same backlog and mode as the daemon's listening socket.
    reactor.listenUNIX(sys.argv[1], factory, backlog=128, mode=0o600)
    kind = type(reactor)
    print(f"ready {kind.__module__}.{kind.__name__}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
