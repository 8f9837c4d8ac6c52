# tests: tests/e2e/test_loops.py
"""Ralph loops, run: the agent, then the check, until the check passes or a limit
ends the task.

A loop task holds its slot from its first iteration to its end. Each iteration
takes a git snapshot, runs the agent (its prompt from `aiwg.core.loops`), runs
the check through the user's shell, takes another snapshot, writes the
iteration's record and saves the loop's progress in the task's record. Both
processes are the supervisor's runs: own session, the task's marker, output
into the task's log and the iteration's files, secrets redacted, cancel and
stop handled alike. The progress is committed before the next iteration
starts, so a daemon killed at any point resumes at the first unfinished
iteration.

One loop is one coroutine (`_drive`): it awaits each step in turn and returns
the task as it settled it. A step that raises ends the loop `failed`, never
leaves it (and its slot) stuck.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from aiwg.core import agents
from aiwg.core.loops import LoopProgress, LoopSpec, after_iteration, iteration_prompt
from aiwg.core.tasks import OUTPUT_TAIL_BYTES, Task, TaskState
from aiwg.daemon.tasks.commands import git_snapshot, user_shell
from aiwg.daemon.tasks.iterations import AGENT_LOG, CHECK_LOG, IterationRecords, snapshot_json
from aiwg.core.timefmt import iso_utc
from aiwg.core.outcomes import failure_text

if TYPE_CHECKING:
    from aiwg.daemon.tasks.process import AgentProcess


class LoopHost(Protocol):
    """What the loop runner needs of the service that runs it (the Supervisor):
    it depends on this, not on the supervisor's module."""

    reactor: Any
    bus: Any
    commands: Any
    root: Path
    actions_dir: Path
    settings: Any
    isolation: Any

    @property
    def store(self) -> Any: ...

    def current_launch(self) -> Any: ...
    def fill(self) -> None: ...
    def missing_agent_message(self) -> str: ...
    def settle(self, final: Task, run: Any = None) -> None: ...
    def start_run(self, task: Task, executable: str, argv: list[str], env: dict[str, str], secrets: list[str],
                  minutes: float, *, timeout: str = "timeout", append: bool = False, copy_to: Path | None = None,
                  offset: int = 0, counted: bool = True) -> Any: ...
    def task_env(self, task: Task, launch: Any) -> tuple[dict[str, str], list[str]]: ...

#: Ways a loop is stopped from outside (the run's `reason` is the same word).
STOPS = ("cancel", "timeout", "shutdown")


class LoopRun:
    """One loop while this daemon drives it."""

    def __init__(self, task: Task, spec: LoopSpec, progress: LoopProgress) -> None:
        self.task_id = task.id
        self.spec = spec
        self.progress = progress
        self.number = progress.iteration + 1
        self.prompt = ""
        self.iteration_started = 0.0
        self.before: dict[str, Any] | None = None
        self.after: dict[str, Any] | None = None
        self.agent: dict[str, Any] | None = None
        self.check: dict[str, Any] | None = None
        self.stop_reason: str | None = None
        self.deadline_call: Any = None
        self.run: "AgentProcess | None" = None
        self.done: Deferred = Deferred()  # fires with the settled task
        self.offset = 0  # where the task's output stream is: at least its log's size, beyond it once capped


class LoopRunner:
    log = Logger()

    def __init__(self, supervisor: LoopHost) -> None:
        self.sup = supervisor
        self.records = IterationRecords(supervisor.actions_dir)
        self.active: dict[str, LoopRun] = {}
        # The daemon's own directory changes all the time: not the agent's doing.
        own = os.path.relpath(supervisor.actions_dir.parent, supervisor.root)
        self._own_files = () if own.startswith("..") else (own,)

    # -- start, stop -------------------------------------------------------------

    def begin(self, task: Task) -> Deferred:
        """Start (or resume) a loop task the supervisor has recorded as running;
        fires with the task as the loop settled it."""
        assert task.loop is not None, task.id
        loop = LoopRun(task, task.loop, task.progress)
        self.active[task.id] = loop
        ensureDeferred(self._drive(loop)).addErrback(self._crashed, loop).chainDeferred(loop.done)
        return loop.done

    def _crashed(self, failure: Any, loop: LoopRun) -> Task | None:
        """A step of the loop raised: the loop ends `failed` rather than leaving it
        (and its slot) stuck forever."""
        self.log.failure("task {task_id}: the loop failed at an internal step", failure, task_id=loop.task_id)
        if self.active.get(loop.task_id) is not loop:
            return None
        if loop.run is not None and not loop.run.has_exited:
            loop.run.stop("cancel", self.sup.settings.kill_grace)
        try:
            return self._finish(loop, TaskState.FAILED, f"internal error in the loop: {failure.value!r}")
        except Exception:
            self.log.failure("task {task_id}: cannot record the loop's failure", task_id=loop.task_id)
            self.active.pop(loop.task_id, None)
            return None

    def cancel(self, task_id: str) -> bool:
        loop = self.active.get(task_id)
        if loop is None or loop.stop_reason is not None:
            return False
        self._stop(loop, "cancel")
        return True

    def stop_all(self) -> list[Deferred]:
        """The daemon is stopping: every loop ends its current process and is queued
        again, to resume at the same iteration."""
        for loop in list(self.active.values()):
            self._stop(loop, "shutdown")
        return [loop.done for loop in self.active.values()]

    def _deadline(self, loop: LoopRun) -> None:
        loop.deadline_call = None
        self.log.warn("task {task_id}: the loop's overall timeout is up", task_id=loop.task_id)
        self._stop(loop, "timeout")

    def _stop(self, loop: LoopRun, reason: str) -> None:
        if loop.stop_reason is None:
            loop.stop_reason = reason
        run = loop.run
        if run is not None and not run.has_exited:
            grace = self.sup.settings.shutdown_grace if reason == "shutdown" else self.sup.settings.kill_grace
            run.stop(reason, grace)
        # Between two processes: the loop stops at its next step.

    # -- the loop ----------------------------------------------------------------

    def _task(self, loop: LoopRun) -> Task:
        task = self.sup.store.get(loop.task_id)
        assert task is not None, loop.task_id
        return task

    async def _drive(self, loop: LoopRun) -> Task:
        """The whole loop: iterations until the check passes, a limit ends it, or
        it is stopped; the task as it was settled."""
        task = self._task(loop)
        progress, spec = loop.progress, loop.spec
        if progress.iteration:  # resumed: its last verdict may already be final
            verdict = after_iteration(spec, progress.iteration, progress.last_exit, progress.spent_usd)
            if verdict.outcome != "continue":
                loop.number = progress.iteration
                state = TaskState.COMPLETED if verdict.outcome == "completed" else TaskState.FAILED
                return self._finish(loop, state, verdict.reason)
        if task.timeout_minutes:
            remaining = task.timeout_minutes * 60 - progress.active_seconds
            loop.deadline_call = self.sup.reactor.callLater(max(0.0, remaining), self._deadline, loop)
        self.log.info(
            "task {task_id}: loop {what} at iteration {n} of {max}, until `{until}` passes",
            task_id=task.id, what="resumed" if progress.iteration else "started",
            n=progress.iteration + 1, max=spec.max_iterations, until=spec.until,
        )
        self.sup.bus.publish("task:started", {
            "taskId": task.id, "pid": None, "priority": task.priority, "source": task.source,
            "iteration": progress.iteration + 1, "maxIterations": spec.max_iterations,
        })
        while True:
            if loop.stop_reason is not None:
                return self._stopped(loop, finished=loop.progress.iteration >= loop.number)
            ended = await self._iteration(loop)
            if ended is not None:
                return ended
            # Durable before the next iteration starts: a crash resumes after this one.
            try:
                await self.sup.store.commit()
            except Exception:
                self.log.failure("cannot record the loop's progress")

    async def _iteration(self, loop: LoopRun) -> Task | None:
        """One iteration: snapshot, agent, check, snapshot, record; the settled
        task if the loop ends with it, None to go on."""
        task = self._task(loop)
        loop.number = loop.progress.iteration + 1
        loop.iteration_started = self.sup.reactor.seconds()
        loop.before = loop.after = loop.agent = loop.check = None
        loop.prompt = iteration_prompt(task.prompt, loop.number, loop.spec,
                                       loop.progress.last_output, loop.progress.last_exit)
        try:
            self.records.begin(task.id, loop.number, loop.prompt)
        except OSError as exc:
            return self._finish(loop, TaskState.FAILED, f"cannot write the iteration's records: {exc}")
        loop.before = await self._snapshot(task)
        if loop.stop_reason is not None:
            return self._stopped(loop)

        agent = self._start_agent(loop)
        if isinstance(agent, Task):
            return agent
        await self._phase(loop, agent)
        loop.agent = self._agent_report(loop, agent)
        if loop.stop_reason is not None:
            self._write_record(loop, outcome="interrupted", reason=loop.stop_reason)
            return self._stopped(loop)

        check, problem = self._start_check(loop)
        if check is None:
            exit_code: int | None = None
            output = f"[{problem}]"
        else:
            await self._phase(loop, check)
            loop.check, exit_code, output = self._check_report(loop, check)
            if check.reason in STOPS:  # killed by us before it could finish: the iteration did not finish
                self._write_record(loop, outcome="interrupted", reason=loop.stop_reason)
                return self._stopped(loop)
        # An isolated loop: each iteration is a commit on the task's branch.
        task = await self.sup.isolation.checkpoint(self._task(loop), f"iteration {loop.number}")
        loop.after = await self._snapshot(task)
        return self._iteration_done(loop, exit_code, output)

    async def _phase(self, loop: LoopRun, run: "AgentProcess") -> None:
        """Wait for one of the loop's processes to end, its output all in."""
        loop.run = run
        await run.ended
        loop.run = None
        loop.offset = max(loop.offset, run.emitted)
        if run.reason in STOPS and loop.stop_reason is None:
            loop.stop_reason = run.reason  # stopped by the run's own timer (overall timeout)

    def _snapshot(self, task: Task) -> Deferred:
        """git's view of where the agent works: its worktree, or the project root."""
        def failed(failure: Any) -> None:
            self.log.failure("git snapshot failed", failure)
            return None

        env = self.sup.current_launch().env
        worktree = self.sup.isolation.cwd(task)
        where, own = (worktree, ()) if worktree else (str(self.sup.root), self._own_files)
        return git_snapshot(self.sup.commands, where, env, own).addErrback(failed)

    def _start_agent(self, loop: LoopRun) -> "AgentProcess | Task":
        """The iteration's agent, started; or the task, failed, if it cannot be."""
        task = self._task(loop)
        launch = self.sup.current_launch()
        if launch.executable is None:
            return self._finish(loop, TaskState.FAILED, self.sup.missing_agent_message())
        argv = agents.build_argv(self.sup.settings.agent, loop.prompt, task.agent)
        env, secrets = self.sup.task_env(task, launch)
        self._note(loop, task, f"[aiwg: iteration {loop.number} of {loop.spec.max_iterations}: agent]\n")
        minutes = loop.spec.iteration_timeout_minutes or self.sup.settings.timeout_minutes
        try:
            return self.sup.start_run(task, launch.executable, argv, env, secrets, minutes,
                                      timeout="iteration-timeout", append=True,
                                      copy_to=self.records.dir(task.id, loop.number) / AGENT_LOG,
                                      offset=loop.offset)
        except Exception as exc:
            return self._finish(loop, TaskState.FAILED, f"could not start the agent: {exc}")

    def _agent_report(self, loop: LoopRun, run: "AgentProcess") -> dict[str, Any]:
        end = run.end(self.sup.settings.agent.output)
        parsed = end.parsed
        if run.reason == "iteration-timeout":
            minutes = loop.spec.iteration_timeout_minutes or self.sup.settings.timeout_minutes
            failure: str | None = f"the agent timed out after {minutes:g} min"
        elif end.succeeded:
            failure = None
        else:
            failure = failure_text(end)
        return {
            "exitCode": run.exit_code, "signal": run.exit_signal, "costUsd": parsed.cost_usd,
            "sessionId": parsed.session_id, "result": (parsed.result or "")[:2000] or None,
            "error": failure, "duration": round(self.sup.reactor.seconds() - run.started, 3),
        }

    def _start_check(self, loop: LoopRun) -> "tuple[AgentProcess | None, str | None]":
        """The iteration's check, started; or None and why it could not be."""
        task = self._task(loop)
        launch = self.sup.current_launch()
        env, secrets = self.sup.task_env(task, launch)
        shell = user_shell(env)
        self._note(loop, task, f"[aiwg: iteration {loop.number} of {loop.spec.max_iterations}: "
                               f"check `{loop.spec.until}`]\n")
        try:
            return self.sup.start_run(
                task, shell, [shell, "-c", loop.spec.until], env, secrets, loop.spec.check_timeout_minutes,
                timeout="check-timeout", append=True, copy_to=self.records.dir(task.id, loop.number) / CHECK_LOG,
                offset=loop.offset, counted=False,
            ), None
        except Exception as exc:
            problem = f"could not start the check with {shell}: {exc}"
            loop.check = {"command": loop.spec.until, "exitCode": None, "error": problem, "duration": 0.0}
            return None, problem

    def _check_report(self, loop: LoopRun, run: "AgentProcess") -> tuple[dict[str, Any], int | None, str]:
        """The check's record, its exit status (None: it did not finish) and the
        end of its output for the next prompt."""
        output = run.output_text()
        problem = None
        if run.reason == "check-timeout":
            problem = f"the check timed out after {loop.spec.check_timeout_minutes:g} min"
        elif run.exit_signal is not None:
            problem = f"the check was killed by signal {run.exit_signal}"
        exit_code = run.exit_code if problem is None and run.reason is None else None
        check = {
            "command": loop.spec.until, "exitCode": exit_code, "signal": run.exit_signal,
            "timedOut": run.reason == "check-timeout", "error": problem,
            "duration": round(self.sup.reactor.seconds() - run.started, 3),
        }
        if problem:
            output += f"\n[{problem}]"
        return check, exit_code, output

    def _iteration_done(self, loop: LoopRun, exit_code: int | None, output: str) -> Task | None:
        agent = loop.agent or {}
        seconds = self.sup.reactor.seconds() - loop.iteration_started
        progress = loop.progress.finished(loop.number, agent.get("costUsd"), seconds, exit_code, output)
        verdict = after_iteration(loop.spec, loop.number, exit_code, progress.spent_usd, agent.get("error"))
        loop.progress = progress
        self._write_record(loop, outcome=verdict.outcome, reason=verdict.reason, seconds=seconds)
        task = self._task(loop)
        self.sup.store.save(task.but(
            loop_progress=progress,
            cost_usd=progress.spent_usd, exit_code=exit_code,
            result=agent.get("result") if agent.get("result") is not None else task.result,
            session_id=agent.get("sessionId") or task.session_id,
        ))
        self.log.info(
            "task {task_id}: iteration {n} of {max}: check {how}{cost}",
            task_id=loop.task_id, n=loop.number, max=loop.spec.max_iterations,
            how="passed" if exit_code == 0 else f"failed (exit {exit_code})" if exit_code is not None
            else "did not finish",
            cost=f", ${progress.spent_usd:.4g} spent" if progress.spent_usd is not None else "",
        )
        self.sup.bus.publish("task:iteration", {
            "taskId": loop.task_id, "iteration": loop.number, "maxIterations": loop.spec.max_iterations,
            "passed": exit_code == 0, "checkExitCode": exit_code, "costUsd": agent.get("costUsd"),
            "totalCostUsd": progress.spent_usd, "outcome": verdict.outcome, "reason": verdict.reason,
            "duration": int(seconds * 1000), "prompt": task.prompt[:200], "source": task.source,
        })
        if verdict.outcome == "completed":
            return self._finish(loop, TaskState.COMPLETED, None)
        if verdict.outcome == "failed":
            return self._finish(loop, TaskState.FAILED, verdict.reason)
        if loop.stop_reason is not None:
            return self._stopped(loop, finished=True)
        return None

    # -- records and the end -----------------------------------------------------------

    def _note(self, loop: LoopRun, task: Task, line: str) -> None:
        """A marker line in the task's log, between the processes' outputs (in the
        file while it is under its cap; on the stream of events either way)."""
        data = line.encode()
        try:
            fd = os.open(str(task.output_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                # The stream goes past the file once the file is capped (a resumed loop's file
                # holds what came before).
                loop.offset = max(loop.offset, size)
                if size == loop.offset and size + len(data) <= self.sup.settings.output_max_bytes:
                    os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            return
        self.sup.bus.publish("task:output", {"taskId": task.id, "stream": "stdout", "chunk": line,
                                             "offset": loop.offset, "bytes": len(data)})
        loop.offset += len(data)

    def _write_record(self, loop: LoopRun, outcome: str, reason: str | None = None,
                      seconds: float | None = None) -> None:
        if seconds is None:
            seconds = self.sup.reactor.seconds() - loop.iteration_started
        check = loop.check
        record = {
            "iteration": loop.number,
            "startedAt": iso_utc(loop.iteration_started),
            "duration": round(seconds, 3),
            "agent": loop.agent,
            "check": check,
            "passed": bool(check and check.get("exitCode") == 0),
            "costUsd": (loop.agent or {}).get("costUsd"),
            "totalCostUsd": loop.progress.spent_usd,
            "outcome": outcome,
            "reason": reason,
            "git": {"before": snapshot_json(loop.before), "after": snapshot_json(loop.after)},
        }
        try:
            self.records.write(loop.task_id, loop.number, record)
        except OSError as exc:
            self.log.error("task {task_id}: cannot write the record of iteration {n}: {error}",
                           task_id=loop.task_id, n=loop.number, error=str(exc))

    def _stopped(self, loop: LoopRun, finished: bool = False) -> Task:
        """End a loop stopped from outside; `finished`: its current iteration had
        run to the end (a resumed loop starts the next one)."""
        reason, n = loop.stop_reason, loop.number
        where = f"after iteration {n}" if finished else f"in iteration {n}"
        if reason == "cancel":
            return self._finish(loop, TaskState.CANCELLED, f"cancelled while running ({where})")
        if reason == "timeout":
            minutes = self._task(loop).timeout_minutes or 0
            return self._finish(loop, TaskState.TIMEOUT, f"the loop timed out after {minutes:g} min, {where}")
        resume = n + 1 if finished else n
        return self._finish(loop, TaskState.QUEUED,
                            f"interrupted by a daemon stop {where}; the loop resumes at iteration {resume}")

    def _finish(self, loop: LoopRun, state: TaskState, error: str | None) -> Task:
        self.active.pop(loop.task_id, None)
        if loop.deadline_call is not None and loop.deadline_call.active():
            loop.deadline_call.cancel()
        if loop.progress.iteration < loop.number and loop.iteration_started:  # cut short: it still cost
            loop.progress = loop.progress.interrupted((loop.agent or {}).get("costUsd"),
                                                      self.sup.reactor.seconds() - loop.iteration_started)
        task = self._task(loop)
        tail, size = _log_tail(task.output_path)
        final = task.moved(
            state, error=error, pid=None, output_tail=tail, output_bytes=size,
            finished_at=None if state == TaskState.QUEUED else self.sup.reactor.seconds(),
            loop_progress=loop.progress,
            cost_usd=loop.progress.spent_usd,
        )
        self.sup.settle(final)
        self.sup.fill()
        return final

    # -- reading -----------------------------------------------------------------------

    def iterations(self, task: Task) -> list[dict[str, Any]]:
        """A loop task's iteration records, for task.get."""
        return self.records.read_all(task.id)


def _log_tail(path: str | None) -> tuple[str, int]:
    if not path:
        return "", 0
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - OUTPUT_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace"), size
    except OSError:
        return "", 0
