# tests: tests/e2e/test_sdnotify.py, tests/daemon/test_sdnotify.py
"""systemd's notify protocol (sd_notify(3)), in the few lines it takes: a unit with
`Type=notify` learns that the daemon is ready (READY=1, once its socket answers),
that it is stopping (STOPPING=1), what it is doing (STATUS=…), and, with
`WatchdogSec=`, that its reactor still turns (WATCHDOG=1 at half the interval).

The variables systemd passes (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID) are taken
out of the environment when read, so that no agent inherits them.
"""

from __future__ import annotations

import os
import socket
from typing import Any, MutableMapping

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier(Service):
    """Says the daemon's state to systemd; does nothing where NOTIFY_SOCKET is unset."""

    name = "sdnotify"
    log = Logger()

    def __init__(self, *, clock: Any, address: str | None, watchdog_seconds: float | None) -> None:
        self._clock = clock
        self._address = address
        self.watchdog_seconds = watchdog_seconds
        self._watchdog: LoopingCall | None = None
        self.failed = ""  # why the last message could not be sent, for the health

    @classmethod
    def from_environ(cls, clock: Any, environ: MutableMapping[str, str], pid: int | None = None) -> "SystemdNotifier":
        """Read (and remove) what systemd put in the environment."""
        values = {name: environ.pop(name, None) for name in VARIABLES}
        address = values["NOTIFY_SOCKET"] or None
        watchdog: float | None = None
        try:
            usec = int(values["WATCHDOG_USEC"] or 0)
            for_us = values["WATCHDOG_PID"] is None or int(values["WATCHDOG_PID"]) == (pid or os.getpid())
        except ValueError:
            usec, for_us = 0, False
        if usec > 0 and for_us:
            watchdog = usec / 1_000_000
        return cls(clock=clock, address=address, watchdog_seconds=watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: Any) -> bool:
        """Send `READY=1`-style assignments in one datagram; whether it went."""
        if self._address is None:
            return False
        text = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        address = self._address
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(text.encode("utf-8", "replace"), address)
        except OSError as exc:
            if not self.failed:
                self.log.warn("cannot notify systemd on {address}: {error}", address=self._address,
                              error=exc.strerror or str(exc))
            self.failed = f"cannot notify systemd on {self._address}: {exc.strerror or exc}"
            return False
        self.failed = ""
        return True

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status, mainpid=os.getpid())

    def stopping(self, status: str = "stopping") -> None:
        self.notify(stopping=1, status=status)

    def say_status(self, text: str) -> None:
        self.notify(status=text)

    def status(self) -> dict[str, Any] | None:
        """For `daemon status`, under systemd only."""
        if not self.enabled:
            return None
        return {"socket": self._address, "watchdog_seconds": self.watchdog_seconds}

    def startService(self) -> None:
        super().startService()
        if self.enabled and self.watchdog_seconds:
            self._watchdog = LoopingCall(self.notify, watchdog=1)
            self._watchdog.clock = self._clock
            self._watchdog.start(self.watchdog_seconds / 2, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()

    def health_issues(self) -> list[str]:
        return [self.failed] if self.failed else []
