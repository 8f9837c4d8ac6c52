# tests: tests/e2e/test_tasks.py, tests/daemon/test_store.py
"""A task as `task.get` and `task.list` send it: AIWG's field names, plus ours.

The daemon's own fields are typed in the store; on the wire they keep the names
they had as metadata keys (`loop`, `approvalExpiresAt`, `approvedBy`,
`rejectedBy`, `resumeSession`, `replyTo`, `chainDepth`), beside the client's
own keys. A task's environment shows its variables' names only (`env`).
"""

from __future__ import annotations

from typing import Any

from aiwg.core.loops import loop_json
from aiwg.core.tasks import Task, TaskState
from aiwg.core.timefmt import iso_utc


def record_json(task: Task) -> dict[str, Any]:
    """A task as the wire sees it: AIWG's field names, plus ours."""
    return {
        "id": task.id,
        "prompt": task.prompt,
        "agent": task.agent,
        "priority": task.priority,
        "state": task.state.value,
        "source": task.source,
        "createdAt": iso_utc(task.created_at),
        "startedAt": iso_utc(task.started_at) if task.started_at is not None else None,
        "completedAt": iso_utc(task.finished_at) if task.finished_at is not None else None,
        "pid": task.pid if task.state == TaskState.RUNNING else None,
        "pgid": task.pgid if task.state == TaskState.RUNNING else None,
        "exitCode": task.exit_code,
        "signal": task.signal,
        "duration": int(task.duration * 1000) if task.duration is not None else None,
        "timeoutMinutes": task.timeout_minutes,
        "result": task.result,
        "error": task.error,
        "output": task.output_tail,
        "outputPath": task.output_path,
        "outputBytes": task.output_bytes,
        "sessionId": task.session_id,
        "costUsd": task.cost_usd,
        "metadata": {**task.metadata, **daemon_metadata(task)},
        "env": sorted(task.env),
        "retries": task.retries,
        "attempts": task.attempts,
        "isolate": task.isolate,
        "base": task.base,
        "workspace": task.workspace.to_json() if task.workspace is not None else None,
        "executor": task.executor or "local",
        "worker": task.worker,
    }


def daemon_metadata(task: Task) -> dict[str, Any]:
    """The daemon's fields under the metadata names clients know them by."""
    out: dict[str, Any] = {}
    if task.loop is not None:
        out["loop"] = loop_json(task.loop, task.progress)
    if task.approval_expires_at is not None:
        out["approvalExpiresAt"] = iso_utc(task.approval_expires_at)
    if task.approved_by is not None:
        out["approvedBy"] = task.approved_by
    if task.rejected_by is not None:
        out["rejectedBy"] = task.rejected_by
    if task.resume_session:
        out["resumeSession"] = task.resume_session
    if task.reply_to is not None:
        out["replyTo"] = dict(task.reply_to)
    if task.chain_depth:
        out["chainDepth"] = task.chain_depth
    return out
