# tests: tests/core/test_approvals.py
"""When a task that waits for approval is rejected unanswered, and in what words.
Pure: the time is an argument."""

from __future__ import annotations

from aiwg.core.tasks import Task


def approval_deadline(task: Task, expire_seconds: float) -> float:
    """The deadline fixed when the task was submitted; for a task without one (a
    store from before deadlines were kept), its creation plus the configured wait."""
    if task.approval_expires_at is not None:
        return task.approval_expires_at
    return task.created_at + expire_seconds


def seconds_left(task: Task, expire_seconds: float, now: float) -> float:
    """How long until it expires (0: it has)."""
    return max(0.0, approval_deadline(task, expire_seconds) - now)


def expiry_reason(task: Task, expire_seconds: float) -> str:
    hours = (approval_deadline(task, expire_seconds) - task.created_at) / 3600
    return f"approval expired after {hours:.3g} h"
