# tests: tests/daemon/test_store.py
"""AIWG's tasks.json, read once into a new store: the Node daemon's task records
as ours (tasks that were running there are recorded as interrupted)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiwg.core.tasks import INTERRUPTED, Task, TaskState


def _iso_to_epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def from_node(record: Any, now: float) -> Task | None:
    """One task of AIWG's tasks.json ({id, prompt, agent, priority, state, createdAt,
    startedAt, completedAt, pid, result, error, output, metadata})."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    if not isinstance(record.get("prompt"), str):
        return None
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    source = "chat" if metadata.get("source") == "ipc-chat" else (
        f"rule:{metadata['ruleId']}" if isinstance(metadata.get("ruleId"), str) else "cli"
    )
    try:
        state = TaskState(record.get("state", "queued"))
    except ValueError:
        state = TaskState.FAILED
    error = record.get("error") if isinstance(record.get("error"), str) else None
    finished = _iso_to_epoch(record.get("completedAt"))
    if state == TaskState.RUNNING:
        state, error, finished = TaskState.FAILED, INTERRUPTED, now
    priority = record.get("priority")
    output = record.get("output") if isinstance(record.get("output"), str) else ""
    result = record.get("result")
    return Task(
        id=record["id"],
        prompt=record["prompt"],
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        state=state,
        source=source,
        agent=record.get("agent") if isinstance(record.get("agent"), str) else None,
        created_at=_iso_to_epoch(record.get("createdAt")) or now,
        started_at=_iso_to_epoch(record.get("startedAt")),
        finished_at=finished,
        error=error,
        output_tail=output[-16384:],
        result=result if isinstance(result, str) else None,
        metadata={**metadata, "imported_from": "tasks.json"},
    )
