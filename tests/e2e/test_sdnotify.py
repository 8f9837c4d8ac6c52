"""systemd's notify protocol, spoken to a fake NOTIFY_SOCKET: READY=1 only once
the daemon's socket answers, STATUS= lines, WATCHDOG=1 at half of WatchdogSec,
STOPPING=1 at stop; and no agent inherits the variables."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from aiwg.client import DaemonClient
from aiwg.errors import AiwgError
from tests.conftest import AIWG, Project, wait_for

pytestmark = pytest.mark.e2e


def answers(project: Project) -> bool:
    try:
        with DaemonClient(project.root, socket_path=project.paths.bind_socket(), timeout=2) as client:
            return bool(client.call("ping")["pong"])
    except AiwgError:
        return False


def test_the_daemon_speaks_systemds_notify_protocol(project: Project, tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(20)
    env = {**project.env, "NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "400000"}
    daemon = subprocess.Popen([AIWG, "daemon", "start", "--foreground"], cwd=project.root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        messages: list[str] = []
        ready_seen_answering = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ready_seen_answering is None:
            text = listener.recv(4096).decode()
            messages.append(text)
            if "READY=1" in text:
                ready_seen_answering = answers(project)  # the moment systemd would go on
        assert ready_seen_answering is True, messages
        ready = next(m for m in messages if "READY=1" in m)
        assert f"MAINPID={daemon.pid}" in ready and "STATUS=0 running, 0 queued; healthy" in ready
        # The watchdog: pinged at half of WatchdogSec (0.4 s), as long as the reactor turns.
        started = time.monotonic()
        pings = 0
        while time.monotonic() - started < 1.5:
            pings += "WATCHDOG=1" in listener.recv(4096).decode()
        assert pings >= 4
        project.aiwg("task", "submit", "which env @env:NOTIFY_SOCKET", "--wait", check=True)
        [run] = project.fake.runs()
        assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(run["env"])
        project.aiwg("daemon", "stop", check=True)
        rest = []
        while not any("STOPPING=1" in m for m in rest):
            rest.append(listener.recv(4096).decode())
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        listener.close()
    wait_for(lambda: not project.running())
