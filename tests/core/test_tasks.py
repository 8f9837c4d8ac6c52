"""Task states, ids and run order."""

from __future__ import annotations

import pytest

from aiwg.core.tasks import (
    RunQueue,
    Task,
    TaskState,
    TransitionError,
    make_task_id,
    source_problem,
    valid_task_id,
)


def test_ids_are_short_url_safe_and_distinct() -> None:
    ids = {make_task_id(bytes([i]) * 8) for i in range(50)}
    assert len(ids) == 50
    for task_id in ids:
        assert valid_task_id(task_id) and len(task_id) == 12 and task_id.startswith("t-")


def test_allowed_and_forbidden_transitions() -> None:
    task = Task(id="t-1", prompt="p")
    running = task.moved(TaskState.RUNNING, pid=5)
    assert running.pid == 5
    assert running.moved(TaskState.TIMEOUT).terminal
    assert running.moved(TaskState.QUEUED).state == TaskState.QUEUED  # retry
    with pytest.raises(TransitionError):
        task.moved(TaskState.COMPLETED)
    with pytest.raises(TransitionError):
        running.moved(TaskState.COMPLETED).moved(TaskState.RUNNING)


def test_duration() -> None:
    assert Task(id="t", prompt="p").duration is None
    assert Task(id="t", prompt="p", started_at=10, finished_at=12.5).duration == 2.5


def test_run_queue_is_priority_then_fifo_with_lazy_removal() -> None:
    queue = RunQueue()
    for seq, (name, priority) in enumerate([("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]):
        queue.push(name, priority, seq)
    assert queue.remove("d") and not queue.remove("d")
    assert "d" not in queue and len(queue) == 4
    assert list(queue.ordered()) == ["b", "a", "c", "e"]
    assert queue.peek() == "b"
    assert [queue.pop() for _ in range(5)] == ["b", "a", "c", "e", None]


@pytest.mark.parametrize("source, ok", [("cli", True), ("chat", True), ("rule:auto-test", True),
                                         ("schedule:daily", True), ("messaging:slack", True),
                                         ("rule:", False), ("random", False)])
def test_sources(source: str, ok: bool) -> None:
    assert (source_problem(source) is None) is ok
