# tests: tests/e2e/test_automation.py, tests/e2e/test_loops.py, tests/daemon/test_scheduler.py
"""What rules and scheduled jobs need of the tasks: an `actions` entry or a rule's
action submitted as a task, a task's state and chain depth (for the loop guard),
a rule's newest unfinished loop, and a rule's `command` condition run the way
the agents run."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from aiwg.core.loops import spec_from_action
from aiwg.core.tasks import Task, TaskState


class TaskActions:
    def __init__(self, supervisor: Any) -> None:
        self._supervisor = supervisor

    def submit(self, spec: dict[str, Any], source: str, metadata: dict[str, Any]) -> Task:
        """Submit the task an action describes (its config keys, snake_case)."""
        extra: dict[str, Any] = {}
        if spec.get("env"):
            extra["env"] = dict(spec["env"])
        loop = spec_from_action(spec)
        if loop is not None:
            extra["loop"] = loop
        if spec.get("chain_depth"):
            extra["chain_depth"] = int(spec["chain_depth"])
        if spec.get("isolate") is not None:
            extra["isolate"] = bool(spec["isolate"])
        if spec.get("base"):
            extra["base"] = str(spec["base"])
        if spec.get("executor"):
            extra["executor"] = str(spec["executor"])
        return self._supervisor.add(  # type: ignore[no-any-return]
            spec["prompt"],
            priority=int(spec.get("priority", 0)),
            timeout_minutes=spec.get("timeout"),
            agent=spec.get("agent"),
            metadata=metadata,
            source=source,
            retries=int(spec.get("retries", 0)),
            require_approval=True if spec.get("require_approval") else None,
            **extra,
        )

    def retry(self, task_id: str) -> Deferred:
        """Run an ended task again: a new task with its prompt and settings (its own
        environment, loop, priority, timeout, agent, retries, where its answer
        goes), `retryOf` naming the old one in its metadata. Fires with the new
        task once it is durable; None if there is no such task; ValueError if it
        has not ended (it would run twice at once)."""
        old = self._task(task_id)
        if old is None:
            return succeed(None)
        if not old.terminal:
            raise ValueError(f"task {task_id} has not ended (it is {old.state}): cancel it first, or wait")
        return self._supervisor.submit(  # type: ignore[no-any-return]
            old.prompt, priority=old.priority, timeout_minutes=old.timeout_minutes, agent=old.agent,
            metadata={**old.metadata, "retryOf": old.id}, source=old.source, retries=old.retries,
            env=dict(old.env), loop=old.loop, resume_session=old.resume_session, reply_to=old.reply_to,
            chain_depth=old.chain_depth, isolate=old.isolate, base=old.base, executor=old.executor or "local",
        )

    def _task(self, task_id: str) -> Task | None:
        store = self._supervisor.store  # None once the store has closed
        return store.get(task_id) if store is not None else None

    def state(self, task_id: str) -> str | None:
        """A task's state; None if there is no such task."""
        task = self._task(task_id)
        return task.state.value if task is not None else None

    def depth(self, task_id: str) -> int | None:
        """A task's automation chain depth, for the loop guard; None if unknown."""
        task = self._task(task_id)
        return None if task is None else task.chain_depth

    def unfinished_loop(self, source: str) -> str | None:
        """The newest loop task from `source` that has not ended, if any (a rule asks
        once after a restart, to start no second loop beside it)."""
        store = self._supervisor.store
        found = [task for state in (TaskState.RUNNING, TaskState.QUEUED, TaskState.AWAITING_APPROVAL)
                 for task in store.in_state(state) if task.source == source and task.loop is not None]
        return max(found, key=lambda t: t.seq).id if found else None

    def run_command(self, line: str, timeout_seconds: float) -> Deferred:
        """A command line the user wrote (a rule's `command` condition), run in the
        project root through their shell with the agents' environment; fires with
        a CommandResult. Ended by the daemon's stop like the agents."""
        supervisor = self._supervisor
        return supervisor.commands.shell(  # type: ignore[no-any-return]
            line, cwd=str(supervisor.root), env=supervisor.current_launch().env, timeout=timeout_seconds)
