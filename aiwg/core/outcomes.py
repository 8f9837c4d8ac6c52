# tests: tests/core/test_outcomes.py
"""How a task ends: pure decisions, from what is known when its run ends or when
a restart finds it recorded as running. No process, clock or file in here: the
supervisor gathers the facts and records the task these return."""

from __future__ import annotations

import signal
from typing import Any

from attrs import evolve, frozen

from aiwg.core.agents import AgentResult
from aiwg.core.tasks import INTERRUPTED, Task, TaskState

#: A loop that the daemon's death interrupted this often is not resumed again.
MAX_LOOP_CRASHES = 3


@frozen
class RunEnd:
    """What is known of an agent's run once it is over."""

    exit_code: int | None
    exit_signal: int | None
    #: Why the daemon stopped it, if it did: "timeout", "cancel", "shutdown".
    reason: str | None
    parsed: AgentResult
    output_tail: str = ""
    output_bytes: int = 0
    stderr_last_line: str = ""
    #: Why the output file stopped being written, if it did (a full disk).
    output_problem: str | None = None

    @property
    def succeeded(self) -> bool:
        """The agent exited 0, by itself, without reporting an error."""
        return self.exit_code == 0 and self.exit_signal is None and not self.parsed.is_error


def failure_text(end: RunEnd) -> str:
    """The error of a run that failed by itself."""
    if end.parsed.is_error:
        detail = end.parsed.result or end.parsed.subtype or "error"
        return f"agent reported an error: {detail}"[:2000]
    if end.exit_signal is not None:
        try:
            name = signal.Signals(end.exit_signal).name
        except ValueError:
            name = str(end.exit_signal)
        return f"agent killed by {name}"
    suffix = f": {end.stderr_last_line[:500]}" if end.stderr_last_line else ""
    return f"agent exited with code {end.exit_code}{suffix}"


def run_outcome(task: Task, end: RunEnd, now: float, default_timeout_minutes: float) -> Task:
    """The task's record once its agent's run is over. The daemon's own reason
    (timeout, cancel) names the state; then the agent's success; a run stopped by
    the daemon's shutdown is retried if it has retries left; otherwise it failed.
    A run whose output could not be written says so in its error."""
    common: dict[str, Any] = dict(
        finished_at=now, exit_code=end.exit_code, signal=end.exit_signal, output_tail=end.output_tail,
        output_bytes=end.output_bytes, result=end.parsed.result, session_id=end.parsed.session_id,
        cost_usd=end.parsed.cost_usd,
    )
    if end.reason == "timeout":
        minutes = task.timeout_minutes or default_timeout_minutes
        final = task.moved(TaskState.TIMEOUT, error=f"timed out after {minutes:g} min", **common)
    elif end.reason == "cancel":
        final = task.moved(TaskState.CANCELLED, error="cancelled while running", **common)
    elif end.succeeded:
        return task.moved(TaskState.COMPLETED, error=None, **common)
    elif end.reason == "shutdown":  # stopped by us before it exited, and not a success
        if task.attempts <= task.retries:
            return task.moved(TaskState.QUEUED, error=INTERRUPTED, **{**common, "finished_at": None})
        final = task.moved(TaskState.FAILED, error=INTERRUPTED, **common)
    else:
        final = task.moved(TaskState.FAILED, error=failure_text(end), **common)
    if end.output_problem is not None:
        error = f"{final.error}; {end.output_problem}" if final.error else end.output_problem
        final = final.but(error=error)
    return final


def exited_outcome(task: Task, now: float, parsed: AgentResult) -> Task:
    """A task found running at start whose agent had already exited (its exit was
    recorded when seen): settled by that exit, with the result read back."""
    common: dict[str, Any] = dict(finished_at=now, pid=None, result=parsed.result, session_id=parsed.session_id,
                                  cost_usd=parsed.cost_usd)
    if task.exit_code == 0 and task.signal is None and not parsed.is_error:
        return task.moved(TaskState.COMPLETED, error=None, **common)
    how = f"was killed by signal {task.signal}" if task.signal is not None else f"exited with code {task.exit_code}"
    return task.moved(TaskState.FAILED, error=f"agent {how} (the daemon stopped before its output was "
                                              "drained)", **common)


def recovery(task: Task, now: float, exited: AgentResult | None = None) -> tuple[Task, str]:
    """What a restart does with a task recorded as running (its daemon died): the
    task to record, and what happened in words. A loop resumes after its last
    finished iteration, unless the daemon keeps dying while it runs; an agent
    that had exited is settled by its exit (`exited`: its result, read back);
    otherwise the task is retried if it may be, or failed as interrupted."""
    if task.loop is not None:
        progress = task.progress
        if progress.crashes < MAX_LOOP_CRASHES:
            done = progress.iteration
            settled = task.moved(TaskState.QUEUED, pid=None, pgid=None,
                                 loop_progress=evolve(progress, crashes=progress.crashes + 1),
                                 error=f"interrupted: the daemon stopped in iteration {done + 1}; "
                                       f"the loop resumes there")
            return settled, f"re-queued to resume its loop at iteration {done + 1}"
        failed = task.moved(
            TaskState.FAILED, finished_at=now, pid=None,
            error=f"interrupted: the daemon died {progress.crashes + 1} times while this loop ran; "
                  f"not resumed again (last in iteration {progress.iteration + 1})")
        return failed, "failed"
    if exited is not None and (task.exit_code is not None or task.signal is not None):
        settled = exited_outcome(task, now, exited)
        return settled, f"{settled.state.value} by its agent's exit"
    if task.attempts <= task.retries:
        return task.moved(TaskState.QUEUED, pid=None, pgid=None, error=INTERRUPTED), "re-queued (retry)"
    return task.moved(TaskState.FAILED, finished_at=now, error=INTERRUPTED, pid=None), "failed"
