"""How a task ends, decided without a reactor or a process."""

from __future__ import annotations

import signal

from attrs import evolve

from aiwg.core.agents import AgentResult
from aiwg.core.loops import LoopProgress, LoopSpec
from aiwg.core.outcomes import MAX_LOOP_CRASHES, RunEnd, failure_text, recovery, run_outcome
from aiwg.core.tasks import INTERRUPTED, Task, TaskState

NOW = 1_000_000.0


def running(**changes: object) -> Task:
    task = Task(id="t-1", prompt="p", state=TaskState.RUNNING, created_at=NOW - 60, started_at=NOW - 30,
                attempts=1)
    return evolve(task, **changes)


def end(**changes: object) -> RunEnd:
    base = RunEnd(exit_code=0, exit_signal=None, reason=None, parsed=AgentResult(result="ok"))
    return evolve(base, **changes)


def test_a_clean_exit_completes_with_the_result() -> None:
    final = run_outcome(running(), end(parsed=AgentResult(result="done", session_id="s", cost_usd=0.2)), NOW, 120)
    assert final.state == TaskState.COMPLETED and final.result == "done" and final.session_id == "s"
    assert final.finished_at == NOW and final.error is None


def test_the_daemons_reason_names_the_state_whatever_the_exit() -> None:
    assert run_outcome(running(timeout_minutes=2), end(reason="timeout"), NOW, 120).error == "timed out after 2 min"
    assert run_outcome(running(), end(reason="timeout"), NOW, 120).error == "timed out after 120 min"
    assert run_outcome(running(), end(reason="cancel", exit_code=None, exit_signal=15), NOW, 120).state == \
        TaskState.CANCELLED


def test_a_shutdown_retries_when_it_may_and_fails_as_interrupted_when_not() -> None:
    stopped = end(reason="shutdown", exit_code=None, exit_signal=signal.SIGTERM)
    retried = run_outcome(running(retries=1), stopped, NOW, 120)
    assert retried.state == TaskState.QUEUED and retried.error == INTERRUPTED and retried.finished_at is None
    assert run_outcome(running(), stopped, NOW, 120).state == TaskState.FAILED
    # A run that succeeded before the stop reached it stands.
    assert run_outcome(running(), end(reason="shutdown"), NOW, 120).state == TaskState.COMPLETED


def test_failure_texts() -> None:
    assert failure_text(end(parsed=AgentResult(is_error=True, subtype="error_max_turns"))) == \
        "agent reported an error: error_max_turns"
    assert failure_text(end(exit_code=None, exit_signal=signal.SIGKILL)) == "agent killed by SIGKILL"
    assert failure_text(end(exit_code=2, stderr_last_line="boom")) == "agent exited with code 2: boom"
    assert failure_text(end(exit_code=1)) == "agent exited with code 1"


def test_an_output_problem_is_named_in_the_error_of_a_failed_run_only() -> None:
    problem = "the daemon could not write the task's output to x: No space left on device"
    failed = run_outcome(running(), end(exit_code=1, output_problem=problem), NOW, 120)
    assert failed.error == f"agent exited with code 1; {problem}"
    assert run_outcome(running(), end(output_problem=problem), NOW, 120).error is None


def test_recovery_ladder() -> None:
    assert recovery(running(), NOW)[0].error == INTERRUPTED
    assert recovery(running(), NOW)[0].state == TaskState.FAILED
    assert recovery(running(retries=2), NOW)[1] == "re-queued (retry)"
    exited = running(exit_code=0)
    settled, what = recovery(exited, NOW, AgentResult(result="fine"))
    assert settled.state == TaskState.COMPLETED and settled.result == "fine" and what == "completed by its agent's exit"
    settled, _ = recovery(running(exit_code=3), NOW, AgentResult())
    assert settled.state == TaskState.FAILED and "exited with code 3" in settled.error


def test_a_loop_resumes_until_the_daemon_has_died_too_often_in_it() -> None:
    spec = LoopSpec(until="make test")
    resumed, what = recovery(running(loop=spec, loop_progress=LoopProgress(iteration=2)), NOW)
    assert resumed.state == TaskState.QUEUED and what == "re-queued to resume its loop at iteration 3"
    assert resumed.progress.crashes == 1 and resumed.progress.iteration == 2
    failed, _ = recovery(running(loop=spec, loop_progress=LoopProgress(iteration=2, crashes=MAX_LOOP_CRASHES)), NOW)
    assert failed.state == TaskState.FAILED and "died 4 times" in failed.error


def test_a_retried_task_starts_without_the_last_attempts_exit() -> None:
    """Recovery after a crash must not judge attempt 2 by attempt 1's exit."""
    stopped = end(reason="shutdown", exit_code=None, exit_signal=signal.SIGTERM)
    queued = run_outcome(running(retries=1), stopped, NOW, 120)
    assert queued.state == TaskState.QUEUED and queued.signal == signal.SIGTERM  # as recorded
    # The supervisor's running move for the next attempt clears it (aiwg/daemon/tasks/supervisor.py fill):
    again = queued.moved(TaskState.RUNNING, attempts=2, exit_code=None, signal=None)
    settled, what = recovery(again, NOW)
    assert settled.state == TaskState.FAILED and settled.error == INTERRUPTED and what == "failed"
