# tests: tests/daemon/test_supervisor.py, tests/e2e/test_crash_recovery.py
"""At start: tasks recorded as running belong to a daemon that died. What is left
of their processes is killed (if it is really theirs), and each is settled as
core.outcomes.recovery decides: resumed, settled by its agent's recorded exit,
retried, or failed as interrupted."""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from aiwg.core import agents
from aiwg.core.outcomes import recovery
from aiwg.core.tasks import Task, TaskState
from aiwg.daemon.tasks.events import task_event
from aiwg.daemon.tasks.process import output_end

log = Logger()


def recover_running(store: Any, reaper: Any, publish: Callable[[str, dict[str, Any]], Any], output: str,
                    now: float) -> tuple[list[str], list[Task]]:
    """Settle every local task found running: their ids, and the remote tasks found
    running (they run on without us: their executor re-attaches to them).
    `output`: the agent's output format, to read the result of one whose exit was recorded."""
    reaper.release_leftovers()
    settled_ids = []
    remote = []
    for task in store.in_state(TaskState.RUNNING):
        if task.executor:
            remote.append(task)
            continue
        killed = reaper.kill_leftover(task)
        exited = None
        if task.loop is None and (task.exit_code is not None or task.signal is not None):
            exited = agents.parse_result(output, output_end(task.output_path))
        settled, what = recovery(task, now, exited)
        store.save(settled)
        settled_ids.append(task.id)
        log.warn("task {task_id} was running when the daemon stopped: {what}{killed}", task_id=task.id,
                 what=what, killed="; killed its leftover process group" if killed else "")
        if settled.state in (TaskState.FAILED, TaskState.COMPLETED):
            publish(f"task:{settled.state.value}", task_event(settled))
    return settled_ids, remote
