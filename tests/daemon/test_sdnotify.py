"""The notify protocol's client on its own: what it reads from the environment,
and what it sends (to a real datagram socket)."""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.internet.task import Clock

from aiwg.daemon.sdnotify import SystemdNotifier


def test_the_variables_are_taken_out_of_the_environment() -> None:
    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42", "PATH": "/bin"}
    notifier = SystemdNotifier.from_environ(Clock(), environ, pid=42)
    assert environ == {"PATH": "/bin"}  # agents inherit none of them
    assert notifier.enabled and notifier.watchdog_seconds == 30.0


def test_a_watchdog_meant_for_another_process_or_malformed_is_not_ours() -> None:
    other = SystemdNotifier.from_environ(Clock(), {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000",
                                                  "WATCHDOG_PID": "7"}, pid=42)
    assert other.watchdog_seconds is None
    junk = SystemdNotifier.from_environ(Clock(), {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"}, pid=42)
    assert junk.watchdog_seconds is None
    off = SystemdNotifier.from_environ(Clock(), {}, pid=42)
    assert not off.enabled and off.notify(ready=1) is False and off.status() is None


def test_messages_reach_the_socket_and_the_watchdog_pings_at_half_the_interval(tmp_path: Path) -> None:
    address = str(tmp_path / "n.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(5)
    clock = Clock()
    notifier = SystemdNotifier.from_environ(clock, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
    notifier.ready("0 running, 0 queued; healthy")
    assert listener.recv(4096).decode().startswith("READY=1\nSTATUS=0 running, 0 queued; healthy\nMAINPID=")
    notifier.startService()
    assert listener.recv(4096) == b"WATCHDOG=1"
    clock.advance(1.0)
    assert listener.recv(4096) == b"WATCHDOG=1"
    notifier.stopService()
    clock.advance(5.0)
    notifier.stopping()
    assert listener.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    listener.close()


def test_a_socket_that_is_gone_is_a_health_issue_not_an_error(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_environ(Clock(), {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.notify(status="x") is False
    assert notifier.health_issues() and "cannot notify systemd" in notifier.health_issues()[0]


def test_an_abstract_address_is_used_as_one() -> None:
    name = f"aiwg-test-{id(object())}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(5)
    SystemdNotifier.from_environ(Clock(), {"NOTIFY_SOCKET": "@" + name}).notify(ready=1)
    assert listener.recv(4096) == b"READY=1"
    listener.close()
