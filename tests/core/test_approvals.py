"""Approval expiry, decided without a reactor."""

from __future__ import annotations

from aiwg.core.approvals import approval_deadline, expiry_reason, seconds_left
from aiwg.core.tasks import Task, TaskState

DAY = 86400.0


def waiting(**fields: object) -> Task:
    return Task(id="t-1", prompt="p", state=TaskState.AWAITING_APPROVAL, created_at=1000.0, **fields)  # type: ignore[arg-type]


def test_the_deadline_fixed_at_submission_stands_whatever_the_setting_says_now() -> None:
    task = waiting(approval_expires_at=1000.0 + 2 * 3600)
    assert approval_deadline(task, DAY) == 1000.0 + 7200
    assert seconds_left(task, DAY, now=1000.0 + 3600) == 3600
    assert expiry_reason(task, DAY) == "approval expired after 2 h"


def test_a_task_without_a_deadline_gets_the_configured_wait_from_its_creation() -> None:
    task = waiting()
    assert approval_deadline(task, 1800.0) == 2800.0
    assert expiry_reason(task, 1800.0) == "approval expired after 0.5 h"


def test_an_expired_approval_is_due_at_once() -> None:
    assert seconds_left(waiting(approval_expires_at=1500.0), DAY, now=9999.0) == 0.0
