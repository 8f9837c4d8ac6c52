# tests: tests/daemon/test_supervisor.py
"""Tasks recorded as running whose record is still on its way to disk. A task is
spawned only once its running state is durable (a crash can never run it twice);
until then it holds its slot, and a cancel or a withdrawal that comes meanwhile
is remembered here, so that it is never spawned at all."""

from __future__ import annotations

from typing import Iterator

from twisted.internet.defer import Deferred, succeed

from aiwg.core.tasks import Task

#: What to do with a start once its commit is over.
SPAWN, CANCELLED, WITHDRAWN = "spawn", "cancelled", "withdrawn"


class Starts:
    def __init__(self) -> None:
        self._queued: dict[str, Task] = {}  # id → the task as it was queued
        self._cancelled: set[str] = set()
        self._withdrawn: set[str] = set()
        self._waiters: list[Deferred] = []

    def __len__(self) -> int:
        return len(self._queued)

    def __iter__(self) -> Iterator[str]:
        return iter(self._queued)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._queued

    def add(self, queued: Task) -> None:
        self._queued[queued.id] = queued

    def cancel(self, task_id: str) -> None:
        self._cancelled.add(task_id)

    def withdraw(self, task_id: str) -> None:
        self._withdrawn.add(task_id)

    def done(self, task_id: str) -> str:
        """Its commit is over: SPAWN, or CANCELLED or WITHDRAWN meanwhile."""
        self._queued.pop(task_id, None)
        if task_id in self._withdrawn:
            self._withdrawn.discard(task_id)
            return WITHDRAWN
        if task_id in self._cancelled:
            self._cancelled.discard(task_id)
            return CANCELLED
        return SPAWN

    def wake(self) -> None:
        """Fire `settled()` if nothing is starting any more."""
        if not self._queued:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def settled(self) -> Deferred:
        """Fires once no task is waiting for its running state to be committed."""
        if not self._queued:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d
