# tests: tests/core/test_tasks.py
"""Tasks: the value, its states and allowed transitions, ids, and queue order.

Order is priority first (higher sooner), then submission order (FIFO): the
store's monotonically increasing `seq` breaks ties, so order never depends on
clocks.
"""

from __future__ import annotations

import base64
import heapq
import re
from operator import attrgetter
from enum import Enum
from typing import Any, Iterator, Mapping

from attrs import field, fields, frozen

from aiwg.core.loops import LoopProgress, LoopSpec
from aiwg.core.states import TERMINAL_STATES
from aiwg.core.workspaces import WorkspaceRecord


class TaskState(str, Enum):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset(TaskState(name) for name in TERMINAL_STATES)

#: Every allowed move. running → queued is a retry after an interruption; a task that
#: needs approval waits (not counted against the concurrency limit) until a person
#: approves it (queued) or rejects it, or its approval expires (rejected).
TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    TaskState.AWAITING_APPROVAL: frozenset({TaskState.QUEUED, TaskState.REJECTED, TaskState.CANCELLED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.RUNNING: frozenset(
        {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMEOUT, TaskState.QUEUED}
    ),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
    TaskState.TIMEOUT: frozenset(),
    TaskState.REJECTED: frozenset(),
}

STATE_NAMES = tuple(s.value for s in TaskState)

#: How much of a task's output its record keeps: the end, where the outcome is.
OUTPUT_TAIL_BYTES = 16 * 1024

#: A task interrupted by the daemon (crash or stop) is failed with this error,
#: unless it asked for retries.
INTERRUPTED = "interrupted: daemon stopped while the task was running"

_SOURCE = re.compile(r"^(cli|chat|ipc|rule:.+|schedule:.+|messaging:.+|client:.+)$")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")


class TransitionError(ValueError):
    pass


@frozen
class Task:
    id: str
    prompt: str
    seq: int = 0
    priority: int = 0
    state: TaskState = TaskState.QUEUED
    source: str = "cli"
    agent: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    pgid: int | None = None
    proc_start: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    timeout_minutes: float | None = None
    error: str | None = None
    output_path: str | None = None
    output_tail: str = ""
    output_bytes: int = 0
    result: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    #: The client's own keys, stored and returned as given; the daemon reads none of
    #: them (what it needs has a field of its own, below).
    metadata: Mapping[str, Any] = field(factory=dict)
    retries: int = 0
    attempts: int = 0
    #: The task's own agent environment as templates (`${VAR}` expanded at start).
    env: Mapping[str, str] = field(factory=dict)
    loop: LoopSpec | None = None
    loop_progress: LoopProgress | None = None
    approval_expires_at: float | None = None
    approved_by: str | None = None
    rejected_by: str | None = None
    #: The agent session this task continues (`--resume`).
    resume_session: str | None = None
    #: Where a messaging bridge posts the answer: {platform, chat, where, kind}.
    reply_to: Mapping[str, Any] | None = None
    #: How many rule firings led to this task (the loop guard's count).
    chain_depth: int = 0
    #: Run in a git worktree of its own, on a branch of its own, from `base`
    #: (a ref; None: the project's HEAD when it starts).
    isolate: bool = False
    base: str | None = None
    workspace: WorkspaceRecord | None = None
    #: The executor that runs it (None: the local one, in the daemon's machine),
    #: and the worker a remote one ran it on.
    executor: str | None = None
    worker: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def progress(self) -> LoopProgress:
        """A loop's progress (none yet: the start)."""
        return self.loop_progress or LoopProgress()

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at
        return None if end is None else max(0.0, end - self.started_at)

    def moved(self, state: TaskState, **changes: Any) -> "Task":
        """This task in `state`, if the move is allowed."""
        if state not in TRANSITIONS[self.state]:
            raise TransitionError(f"task {self.id}: {self.state} → {state} is not allowed")
        return self.but(state=state, **changes)

    def but(self, **changes: Any) -> "Task":
        """This task with `changes` (attrs' evolve, for this class: a task is
        copied several times on its way, and evolve's generic walk of the fields
        costs more than the rest of a save)."""
        values = dict(zip(_FIELD_NAMES, _all_fields(self)))
        values.update(changes)
        return Task(**values)


@frozen
class Change:
    """What asking to cancel, approve or reject a task did: `task` as it is now
    (None: there is no such task), whether it `done`, and if not, why not in
    words (`refused`), for the caller to pass on as it is."""

    task_id: str
    task: Task | None
    done: bool = False
    refused: str | None = None

    @classmethod
    def unknown(cls, task_id: str) -> "Change":
        return cls(task_id, None, refused=f"there is no task {task_id}")

    @classmethod
    def made(cls, task: Task) -> "Change":
        return cls(task.id, task, done=True)

    @classmethod
    def not_awaiting_approval(cls, task: Task) -> "Change":
        return cls(task.id, task, refused=f"task {task.id} is not awaiting approval (it is {task.state})")


_FIELD_NAMES = tuple(f.name for f in fields(Task))
_all_fields = attrgetter(*_FIELD_NAMES)


def make_task_id(random_bytes: bytes) -> str:
    """`t-` and 10 lowercase base32 characters from 50 random bits: short, URL-safe."""
    text = base64.b32encode(random_bytes[:7]).decode("ascii").lower().rstrip("=")
    return "t-" + text[:10]


def valid_task_id(text: str) -> bool:
    return bool(_ID.match(text))


def source_problem(source: str) -> str | None:
    if not _SOURCE.match(source):
        return (
            "must be cli, chat, ipc, rule:<id>, schedule:<job>, messaging:<platform> "
            f"or client:<name>, got '{source}'"
        )
    return None


class RunQueue:
    """The queued tasks in run order: a heap on (-priority, seq)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._live: dict[str, tuple[int, int, str]] = {}

    def push(self, task_id: str, priority: int, seq: int) -> None:
        entry = (-priority, seq, task_id)
        self._live[task_id] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, task_id: str) -> bool:
        """Forget a queued task (lazily: its heap entry is skipped when popped)."""
        return self._live.pop(task_id, None) is not None

    def pop(self) -> str | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            if self._live.get(entry[2]) == entry:
                del self._live[entry[2]]
                return entry[2]
        return None

    def peek(self) -> str | None:
        while self._heap:
            entry = self._heap[0]
            if self._live.get(entry[2]) == entry:
                return entry[2]
            heapq.heappop(self._heap)
        return None

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    def ordered(self) -> Iterator[str]:
        """Queued ids in run order (a sorted copy; for status, not for the hot path)."""
        for entry in sorted(self._live.values()):
            yield entry[2]
