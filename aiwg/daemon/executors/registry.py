# tests: tests/e2e/test_remote.py
"""The supervisor's remote executors, by name: which one a task goes to, their
queues at start (re-attached to the tasks a previous daemon left running), and
what status and health say of them. The local executor is the supervisor itself."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from aiwg.core.remote import LOCAL, namespace_for
from aiwg.core.tasks import Change, Task
from aiwg.errors import InvalidParams


class Executors:
    log = Logger()

    def __init__(self, sup: Any) -> None:
        self.sup = sup
        self.remote: dict[str, Any] = {}

    def name_for(self, requested: str | None) -> str | None:
        """The remote executor a new task goes to (None: the local one);
        InvalidParams names one that is not configured."""
        name = requested or self.sup.settings.default_executor
        if name == LOCAL:
            return None
        if name not in self.sup.settings.remotes:
            known = ", ".join([LOCAL, *sorted(self.sup.settings.remotes)])
            raise InvalidParams(f"Invalid params: executor: '{name}' is not configured (configured: {known}; "
                                f"see executors in .aiwg/daemon.json)", {"param": "executor"})
        return name

    def start(self, running: list[Task]) -> None:
        """Each configured remote executor, re-attached to its tasks found running."""
        for kind in self.sup.settings.remotes:
            self._add(kind, [t for t in running if t.executor == kind])
        for task in running:
            if task.executor not in self.remote:
                self.sup.fail_now(task, f"executor '{task.executor}' ran this task and is no longer configured; "
                                  "its remote run is not followed")

    def _add(self, kind: str, running: list[Task]) -> None:
        from aiwg.daemon.executors.remote import RemoteExecutor  # not imported without a remote executor

        executor = RemoteExecutor(self.sup, self.sup.settings.remotes[kind], namespace_for(str(self.sup.root)))
        self.remote[kind] = executor
        executor.start(running)

    def route(self, task: Task) -> bool:
        """A remote task into its executor's queue (True); a local one is not ours."""
        if not task.executor:
            return False
        executor = self.remote.get(task.executor)
        if executor is None:
            self.sup.fail_now(task, f"executor '{task.executor}' is not configured")
        else:
            executor.enqueue(task)
        return True

    def cancel(self, task: Task) -> Change | None:
        executor = self.remote.get(task.executor or "")
        return None if executor is None else executor.cancel(task)

    def waiting_reason(self, task: Task) -> str | None:
        executor = self.remote.get(task.executor or "")
        return None if executor is None else executor.waiting_reason()

    def apply(self) -> None:
        """After a reload: new executors start; changed ones reconnect with their new settings."""
        for kind, settings in self.sup.settings.remotes.items():
            executor = self.remote.get(kind)
            if executor is None:
                self._add(kind, [])
            elif executor.settings != settings:
                executor.reconfigure(settings)
        for kind in set(self.remote) - set(self.sup.settings.remotes):
            self.log.warn("executors.{kind} was removed: its running tasks are followed until they end, "
                          "no new task goes to it", kind=kind)

    def dispatch(self) -> None:
        for executor in self.remote.values():
            executor.dispatch()

    def stop(self) -> None:
        for executor in self.remote.values():
            executor.stop()

    def status(self) -> dict[str, Any]:
        return {"default": self.sup.settings.default_executor,
                "remote": {kind: executor.status() for kind, executor in self.remote.items()}}

    def health_issues(self) -> list[str]:
        return [issue for executor in self.remote.values() for issue in executor.health_issues()]
