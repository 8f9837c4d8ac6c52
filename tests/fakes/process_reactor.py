"""A Clock that also 'spawns' processes: it records each spawn and lets the test
drive the protocol (output, exit, end) and see which signals were sent."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure


class FakeProcess:
    def __init__(self, reactor: "FakeProcessReactor", protocol: Any, executable: str,
                 args: list[str], env: dict[str, str], path: str, child_fds: dict[int, Any], pid: int) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.child_fds = child_fds
        self.pid = pid
        self.exited = False

    def output(self, data: bytes, fd: int = 1) -> None:
        self.protocol.childDataReceived(fd, data)

    def exit(self, code: int | None = 0, signal: int | None = None, group_survives: bool = False) -> None:
        self.exited = True
        reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
        if not group_survives:
            self.reactor.alive_groups.discard(self.pid)
        self.protocol.processExited(Failure(reason))

    def end(self) -> None:
        self.protocol.processEnded(Failure(ProcessDone(0)))

    def finish(self, code: int | None = 0, signal: int | None = None) -> None:
        self.exit(code, signal)
        self.end()


class FakeProcessReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []
        self.signals: list[tuple[int, int]] = []
        self.alive_groups: set[int] = set()
        self._pids = itertools.count(900001)

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str],
                     path: str, childFDs: dict[int, Any]) -> FakeProcess:
        process = FakeProcess(self, protocol, executable, list(args), dict(env), path, dict(childFDs), next(self._pids))
        self.spawned.append(process)
        self.alive_groups.add(process.pid)
        protocol.makeConnection(process)
        return process

    def killpg(self, pgid: int, signum: int) -> None:
        if signum != 0:
            self.signals.append((pgid, signum))
        if pgid not in self.alive_groups:
            raise ProcessLookupError(pgid)

    def running(self) -> list[FakeProcess]:
        return [p for p in self.spawned if not p.exited]
