# tests: tests/daemon/test_supervisor.py, tests/e2e/test_approvals.py
"""Tasks that wait for a person before they run: approval (the task is queued),
rejection (it ends unrun), and the timer that rejects it when nobody answers in
time (`approvals.expire_hours`; re-armed at start for what was waiting)."""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from aiwg.core.approvals import expiry_reason, seconds_left
from aiwg.core.tasks import Change, Task, TaskState
from aiwg.daemon.tasks.events import task_event


class Approvals:
    log = Logger()

    def __init__(self, *, reactor: Any, store: Callable[[], Any], bus: Any, enqueue: Callable[[Task], None],
                 expire_seconds: Callable[[], float]) -> None:
        self._reactor = reactor
        self._store = store
        self._bus = bus
        self._enqueue = enqueue
        self._expire_seconds = expire_seconds
        self._expiries: dict[str, Any] = {}  # awaiting task id → its expiry timer

    def approve(self, task_id: str, by: str) -> Change:
        """Queue a task that awaits approval."""
        task = self._claim(task_id)
        if isinstance(task, Change):
            return task
        approved = task.moved(TaskState.QUEUED, approved_by=by)
        self._store().save(approved)
        self.log.info("task {task_id} approved by {by}", task_id=task_id, by=by)
        self._bus.publish("task:approved", {"taskId": task_id, "by": by, "prompt": task.prompt[:200],
                                            "source": task.source, "priority": task.priority})
        self._enqueue(approved)
        return Change.made(approved)

    def reject(self, task_id: str, by: str, reason: str | None = None) -> Change:
        """End a task that awaits approval, unrun."""
        task = self._claim(task_id)
        if isinstance(task, Change):
            return task
        error = f"rejected by {by}" + (f": {reason}" if reason else "")
        rejected = task.moved(TaskState.REJECTED, finished_at=self._reactor.seconds(), error=error,
                              rejected_by=by)
        self._store().save(rejected)
        self.log.info("task {task_id} {error}", task_id=task_id, error=error)
        self._bus.publish("task:rejected", {**task_event(rejected), "by": by, "reason": reason or ""})
        return Change.made(rejected)

    def _claim(self, task_id: str) -> Task | Change:
        """The task, if it awaits approval (its expiry timer disarmed: it is being
        decided); else why it cannot be decided."""
        task = self._store().get(task_id)
        if task is None:
            return Change.unknown(task_id)
        if task.state != TaskState.AWAITING_APPROVAL:
            return Change.not_awaiting_approval(task)
        self.disarm(task_id)
        return task

    def arm(self, task: Task) -> None:
        """Reject `task` when its approval expires (at once if it has)."""
        delay = seconds_left(task, self._expire_seconds(), self._reactor.seconds())
        self.disarm(task.id)
        self._expiries[task.id] = self._reactor.callLater(delay, self._expire, task.id)

    def disarm(self, task_id: str) -> None:
        call = self._expiries.pop(task_id, None)
        if call is not None and call.active():
            call.cancel()

    def stop(self) -> None:
        for task_id in list(self._expiries):
            self.disarm(task_id)

    def _expire(self, task_id: str) -> None:
        self._expiries.pop(task_id, None)
        task = self._store().get(task_id)
        if task is None:
            return
        self.reject(task_id, "expiry", expiry_reason(task, self._expire_seconds()))
