# tests: tests/daemon/test_supervisor.py
"""The payload of the bus events about a task's state (`task:completed`,
`task:failed`, …): AIWG's field names, short enough for a chat message."""

from __future__ import annotations

from typing import Any

from aiwg.core.tasks import Task, TaskState


def task_event(task: Task) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "taskId": task.id,
        "state": task.state.value,
        "prompt": task.prompt[:200],
        "source": task.source,
        "priority": task.priority,
    }
    if task.duration is not None:
        payload["duration"] = int(task.duration * 1000)
    if task.exit_code is not None:
        payload["exitCode"] = task.exit_code
    if task.error:
        payload["error"] = task.error
    if task.state == TaskState.COMPLETED and task.result is not None:
        payload["result"] = task.result[:2000]
    if task.cost_usd is not None:
        payload["costUsd"] = task.cost_usd
    if task.output_tail and task.state in (TaskState.FAILED, TaskState.TIMEOUT):
        payload["outputTail"] = task.output_tail[-2000:]
    if task.workspace is not None:
        payload["workspace"] = task.workspace.to_json()
    if task.executor is not None:
        payload["executor"] = task.executor
    if task.worker is not None:
        payload["worker"] = task.worker
    return payload
