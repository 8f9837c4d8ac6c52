# tests: tests/daemon/test_supervisor.py, tests/e2e/test_tasks.py
"""Supervisor service and AgentProcessProtocol: runs queued tasks as agent processes.

Each task runs in its own session and process group (through `setsid`), with
stdin on /dev/null, cwd at the project root (an isolated task: its worktree,
see isolation.py) and `CLAUDECODE` removed. A
timeout, a cancel or the daemon's stop signals the whole group: SIGTERM, then
SIGKILL after a grace period. When the agent itself exits, whatever it left
running in its group is signalled the same way, so no orphan survives and the
output pipes close. A task holds its slot from the moment it is recorded as
running — it is spawned only once that record is on disk — until the agent
exits; the record is final when its output has all been read.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from aiwg.core.backoff import Backoff
from aiwg.core.config import Config
from aiwg.core.loops import LoopSpec, prompt_problem
from aiwg.core.outcomes import run_outcome
from aiwg.core.tasks import Change, RunQueue, Task, TaskState, make_task_id
from aiwg.core.workspaces import WorkspaceError
from aiwg.core.text import utf8_safe
from aiwg.core.timefmt import iso_utc
from aiwg.daemon.bus import EventBus
from aiwg.daemon.executors.registry import Executors
from aiwg.daemon.tasks.agent_starts import AgentStarts
from aiwg.daemon.tasks.approvals import Approvals
from aiwg.daemon.tasks.cgroups import TaskCgroups
from aiwg.daemon.tasks.commands import CommandRunner
from aiwg.daemon.tasks.events import task_event
from aiwg.daemon.tasks.housekeeping import Housekeeping
from aiwg.daemon.tasks.isolation import Isolation
from aiwg.daemon.tasks.launch import AgentLaunch, AgentLauncher
from aiwg.daemon.tasks.loop_runner import LoopRunner
from aiwg.daemon.tasks.process import TRIM_AFTER_BYTES, AgentProcess, Exit, trim_heap
from aiwg.daemon.tasks.reaper import Reaper, StartTimes
from aiwg.daemon.tasks.settings import SupervisorSettings
from aiwg.daemon.tasks import status
from aiwg.daemon.tasks.recovery import recover_running
from aiwg.daemon.tasks.starts import CANCELLED, SPAWN, Starts
from aiwg.daemon.tasks.spawning import has_exited, spawn_session_leader
from aiwg.daemon.tasks.store import DuplicateTask, TaskStore
from aiwg.errors import SHUTTING_DOWN, STORE_UNWRITABLE, InvalidParams, RpcError

__all__ = ["Supervisor", "SupervisorSettings"]


class Supervisor(Service):
    name = "supervisor"
    log = Logger()

    def __init__(
        self,
        *,
        reactor: Any,
        store: Callable[[], TaskStore],
        bus: EventBus,
        project_root: Path,
        actions_dir: Path,
        settings: SupervisorSettings,
        environ: Mapping[str, str] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        killpg: Callable[[int, int], None] = os.killpg,
        spawn: Callable[..., Any] | None = None,
        has_exited: Callable[[int], bool] = has_exited,
        cgroups: TaskCgroups | None = None,
        containment_note: str = "",
        commands: CommandRunner | None = None,
    ) -> None:
        self.reactor = reactor
        self._store = store  # the store service opens it after the lock, before we start
        self.bus = bus
        self.root = project_root
        self.actions_dir = actions_dir
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self._random = random_bytes
        self.reaper = Reaper(killpg=killpg, cgroups=cgroups, containment_note=containment_note)
        self._has_exited = has_exited
        self.exhausted: str | None = None  # out of descriptors or processes: tasks wait
        self._exhaustion = Backoff(base=0.5, cap=30.0)
        self._spawn_process = spawn or partial(spawn_session_leader, reactor)
        self.queue = RunQueue()
        self.runs: dict[str, AgentProcess] = {}
        self._accepting = False
        self._devnull: int | None = None
        self.started_count = 0
        self._retry_fill: Any = None
        self._start_times = StartTimes()
        self.launcher = AgentLauncher(reactor=reactor, environ=self.environ, settings=lambda: self.settings)
        self.starts = Starts()
        self.approvals = Approvals(reactor=reactor, store=store, bus=bus, enqueue=self._enqueue,
                                   expire_seconds=lambda: self.settings.approval_expire_seconds)
        self.commands = commands or CommandRunner(reactor)
        self.isolation = Isolation(reactor=reactor, root=project_root, environ=self.environ, store=store,
                                   settings=lambda: self.settings.isolation, publish=bus.publish)
        self._ready = True  # False while a crash's worktrees are collected: nothing starts
        self.loops = LoopRunner(self)
        self.agent_starts = AgentStarts(self)
        self.executors = Executors(self)
        self.housekeeping = Housekeeping(
            clock=reactor, store=store, reaper=self.reaper, actions_dir=actions_dir,
            forget_records=self.loops.records.remove,
            retention=lambda: (self.settings.retention_tasks, self.settings.retention_age_seconds),
            ours=self._ours,
        )

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.reaper.subreaper = self.reaper.become_subreaper()
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        recovered, remote = recover_running(self.store, self.reaper, self.bus.publish, self.settings.agent.output,
                                            self.reactor.seconds())
        self._ready = False
        self.isolation.recover([t for t in map(self.store.get, recovered) if t is not None]).addErrback(
            lambda f: self.log.failure("cannot collect the worktrees of interrupted tasks", f)
        ).addBoth(self._recovered)
        self.executors.start(remote)
        for task in self.store.in_state(TaskState.QUEUED):
            if not self.executors.route(task):
                self.queue.push(task.id, task.priority, task.seq)
        for task in self.store.in_state(TaskState.AWAITING_APPROVAL):
            self.approvals.arm(task)
        self.housekeeping.start()
        self._accepting = True
        self.log.info(
            "supervisor started: {queued} queued, max {max} at once",
            queued=len(self.queue),
            max=self.settings.max_parallel,
        )
        self.reactor.callLater(0, self.fill)

    def _recovered(self, _: Any) -> None:
        self._ready = True
        self.fill()
        self.executors.dispatch()

    def stopService(self) -> Deferred:
        """Stop taking work; TERM every running group, KILL after the grace period,
        and fire once every process has ended and its final state is recorded."""
        super().stopService()
        self._accepting = False
        waiting = [run.ended for run in self.runs.values()] + [self.starts.settled()]
        waiting += self.loops.stop_all()
        if self.runs:
            self.log.info(
                "stopping {count} running task(s): SIGTERM, SIGKILL after {grace}s",
                count=len(self.runs),
                grace=self.settings.shutdown_grace,
            )
        for run in list(self.runs.values()):
            run.stop("shutdown", self.settings.shutdown_grace)
        waiting += self.commands.stop()

        if self._retry_fill is not None and self._retry_fill.active():
            self._retry_fill.cancel()
        self.housekeeping.stop()
        self.approvals.stop()
        self.executors.stop()  # remote tasks run on: the next start re-attaches to them

        def closed(_: Any) -> None:
            self.housekeeping.sweep_orphans()
            self.reaper.close()
            if self._devnull is not None:
                os.close(self._devnull)
                self._devnull = None

        return DeferredList(waiting).addCallback(lambda _: self.isolation.settled()).addCallback(closed)

    def _ours(self) -> tuple[set[int], set[str], dict[str, AgentProcess]]:
        """What is this supervisor's now (for the sweep): its children's pids, the
        tasks that run or are starting, and those whose processes it waits for."""
        known = {run.transport.pid for run in self.runs.values() if run.transport is not None}
        known |= self.commands.pids() | self.isolation.step.git.pids()  # the daemon's own commands, git's
        return known, {*self.runs, *self.starts, *self.loops.active}, self.runs

    @property
    def store(self) -> TaskStore:
        return self._store()

    # -- submit / cancel ---------------------------------------------------

    def add(
        self,
        prompt: str,
        *,
        priority: int = 0,
        timeout_minutes: float | None = None,
        agent: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str = "cli",
        retries: int = 0,
        env: Mapping[str, str] | None = None,
        require_approval: bool | None = None,
        loop: LoopSpec | None = None,
        resume_session: str | None = None,
        reply_to: Mapping[str, Any] | None = None,
        chain_depth: int = 0,
        isolate: bool | None = None,
        base: str | None = None,
        executor: str | None = None,
        start: bool = True,
    ) -> Task:
        """Queue a task now: it is in memory at once, on disk at the end of the turn
        (`submit` waits for that). `env` adds to the agent's environment for this task only; its
        `${VAR}`s are expanded from the daemon's environment when the task starts, and
        only the templates are stored (the record shows the names). A task that needs
        approval (asked for, or its source is in `approvals.require_for`) waits in
        state awaiting_approval instead, outside the queue, until approved, rejected
        or expired. A task with a `loop` runs its agent, then the loop's check, until
        the check passes or a limit ends it (see LoopRunner). An isolated task (`isolate`,
        else tasks.isolation) works in a git worktree of its own, from `base`. A task for a
        remote `executor` (else executors.default) is always isolated, and never a loop."""
        if not self._accepting:
            raise RpcError(SHUTTING_DOWN, "Supervisor is shutting down")
        prompt = utf8_safe(prompt)  # what the agent gets is what the store keeps
        problem = prompt_problem(self.settings.agent, prompt, loop)
        if problem is not None:
            raise InvalidParams(f"Invalid params: prompt: {problem}", {"param": "prompt"})
        gated = self.settings.needs_approval(source) if require_approval is None else require_approval
        remote = self.executors.name_for(executor)
        if remote is not None and loop is not None:
            raise InvalidParams(f"Invalid params: executor: a loop runs on the local executor only, not on "
                                f"'{remote}'", {"param": "executor"})
        isolated = remote is not None or (self.settings.isolation.default if isolate is None else bool(isolate))
        if base is not None and not isolated:
            raise InvalidParams("Invalid params: base: only an isolated task starts from a base "
                                "(isolate it, or set tasks.isolation to worktree)", {"param": "base"})
        now = self.reactor.seconds()
        for _ in range(5):
            candidate = make_task_id(self._random(8))
            try:
                task = self.store.insert(Task(
                    id=candidate,
                    prompt=prompt,
                    priority=priority,
                    source=source,
                    agent=agent,
                    state=TaskState.AWAITING_APPROVAL if gated else TaskState.QUEUED,
                    created_at=now,
                    timeout_minutes=timeout_minutes,
                    metadata=dict(metadata or {}),
                    retries=retries,
                    output_path=str(self.actions_dir / f"{candidate}.log"),
                    env={str(k): str(v) for k, v in (env or {}).items()},
                    loop=loop,
                    approval_expires_at=now + self.settings.approval_expire_seconds if gated else None,
                    resume_session=resume_session or None,
                    reply_to=dict(reply_to) if reply_to is not None else None,
                    chain_depth=chain_depth,
                    isolate=isolated,
                    base=base,
                    executor=remote,
                ))
                break
            except DuplicateTask:
                continue
        else:
            raise RuntimeError("could not pick an unused task id")
        if gated:
            self.approvals.arm(task)
            self.bus.publish("task:awaiting_approval", {
                "taskId": task.id, "priority": task.priority, "prompt": task.prompt[:200],
                "source": task.source, "expiresAt": iso_utc(task.approval_expires_at or now),
            })
            self.log.info("task {task_id} awaits approval (source {source})", task_id=task.id, source=task.source)
            return self.store.get(task.id) or task
        self._enqueue(task, start)
        return self.store.get(task.id) or task

    def submit(self, prompt: str, **options: Any) -> Deferred:
        """Queue a task (as `add` does); fires with it once its record is durable.
        One that cannot be written is withdrawn, never to run, and the Deferred
        fails with -32012: a client told so may retry without running it twice."""
        task = self.add(prompt, start=False, **options)
        # The answer waits for the commit that a start shares: it goes out first, the
        # spawn (a few milliseconds) follows in the same turn.
        durable = self.store.when_durable().addCallbacks(lambda _: self.store.get(task.id) or task,
                                                         self._not_durable, errbackArgs=(task,))
        if task.state == TaskState.QUEUED:
            self.fill()
        return durable

    def _not_durable(self, failure: Any, task: Task) -> Task:
        why = str(failure.value)
        if not self.withdraw(task.id, why):
            return task  # it reached the disk after all
        raise RpcError(STORE_UNWRITABLE, "the task could not be written to the task store, so it was not "
                       f"submitted: {why}", {"reason": why})

    def _enqueue(self, task: Task, start: bool = True) -> None:
        """Into the run queue (a remote executor's, for a remote task), announced, and
        started if a slot is free."""
        remote = self.executors.route(task)
        if not remote:
            self.queue.push(task.id, task.priority, task.seq)
        self.bus.publish(
            "task:queued",
            {"taskId": task.id, "priority": task.priority, "prompt": task.prompt[:80],
             "source": task.source, "queueSize": len(self.queue)},
        )
        if start and not remote:
            self.fill()

    def cancel(self, task_id: str) -> Change:
        """Cancel a queued (never starts) or running (group killed) task."""
        task = self.store.get(task_id)
        if task is None:
            return Change.unknown(task_id)
        if task.state == TaskState.AWAITING_APPROVAL:
            self.approvals.disarm(task_id)
            return Change.made(self._cancel_unstarted(task, "cancelled while awaiting approval"))
        if task.executor and (change := self.executors.cancel(task)) is not None:
            return change
        if task.state == TaskState.QUEUED and self.queue.remove(task_id):
            return Change.made(self._cancel_unstarted(task))
        if task_id in self.starts:  # its running state is being committed
            self.starts.cancel(task_id)
            return Change.made(task)
        if self.isolation.cancel_preparing(task_id):  # its worktree is being made
            return Change.made(task)
        if task_id in self.loops.active:
            if self.loops.cancel(task_id):
                return Change.made(task)
        else:
            run = self.runs.get(task_id)
            if run is not None and run.reason is None and not run.has_exited:
                run.stop("cancel", self.settings.kill_grace)
                return Change.made(task)
        # Finished, or finishing: its outcome stands.
        return Change(task_id, task, refused=f"task {task_id} has already ended ({task.state})"
                      if task.terminal else f"task {task_id} is already ending")

    # -- approval gates ------------------------------------------------------

    def approve(self, task_id: str, by: str) -> Change:
        """Queue a task that awaits approval."""
        return self.approvals.approve(task_id, by)

    def reject(self, task_id: str, by: str, reason: str | None = None) -> Change:
        """End a task that awaits approval, unrun."""
        return self.approvals.reject(task_id, by, reason)

    # -- running -----------------------------------------------------------

    def fill(self) -> None:
        """Start queued tasks while slots are free: record them all as running in
        one commit, and spawn them once it is durable (recorded first, so a crash
        can never run a task twice). Until then they hold their slots."""
        starting: list[tuple[Task, Task]] = []
        launch: AgentLaunch | None = None
        free = self.settings.max_parallel - len(self.starts) - self._active_count()
        while self._accepting and self._ready and len(starting) < free:
            task_id = self.queue.pop()
            if task_id is None:
                break
            task = self.store.get(task_id)
            if task is None or task.state != TaskState.QUEUED:
                continue
            launch = launch or self.current_launch()
            if launch.executable is None:
                self.fail_now(task, self.missing_agent_message(), started_at=self.reactor.seconds())
                continue
            resumed = task.loop is not None and task.started_at is not None
            try:
                workspace = self.isolation.initial(task) if task.isolate else None
            except WorkspaceError as exc:
                self.fail_now(task, str(exc), started_at=self.reactor.seconds())
                continue
            running = task.moved(
                TaskState.RUNNING, started_at=task.started_at if resumed else self.reactor.seconds(),
                attempts=task.attempts + 1, exit_code=None, signal=None,  # an earlier attempt's exit is not this one's
                error=None, output_path=task.output_path or str(self.actions_dir / f"{task.id}.log"),
                workspace=workspace,
            )
            self.store.save(running)
            self.starts.add(task)
            starting.append((task, running))
        if not starting or launch is None:
            return
        self.store.commit().addCallbacks(
            self._recorded, self._not_recorded, callbackArgs=(starting, launch), errbackArgs=(starting,)
        )

    def _recorded(self, _: Any, starting: list[tuple[Task, Task]], launch: "AgentLaunch") -> None:
        """Their running state is on disk: spawn them, unless they were cancelled or
        the daemon began to stop meanwhile (then they never ran)."""
        if launch.unset:
            self.log.warn("agent.env refers to unset variable(s): {names}", names=", ".join(launch.unset))
        for queued, running in starting:
            what = self.starts.done(running.id)
            if what == CANCELLED:
                self._cancel_unstarted(running)
            elif what == SPAWN and not self._accepting:
                self.store.save(queued)  # it never ran: queued again for the next start
            elif what == SPAWN:
                self._spawn(running, launch, queued)
        self.starts.wake()

    def withdraw(self, task_id: str, why: str) -> bool:
        """A submitted task that could not be made durable, whose submitter was told
        so: it never existed (out of the queue, the counts and the store), so a
        retry by the client cannot run it twice. False if it is on disk after all."""
        if not self.store.withdraw(task_id):
            return False
        self.queue.remove(task_id)
        self.approvals.disarm(task_id)
        if task_id in self.starts:
            self.starts.withdraw(task_id)
        self.bus.publish("task:withdrawn", {"taskId": task_id, "error": why})
        return True

    def _not_recorded(self, failure: Any, starting: list[tuple[Task, Task]]) -> None:
        self.log.failure("cannot record tasks as running; not starting them (retrying shortly)", failure)
        for queued, running in starting:
            what = self.starts.done(running.id)
            if what == CANCELLED:
                self._cancel_unstarted(running)
            elif what == SPAWN:
                self.store.save(queued)  # back to queued, in memory and at the next commit
                self.queue.push(queued.id, queued.priority, queued.seq)
        self.starts.wake()
        if self._accepting and (self._retry_fill is None or not self._retry_fill.active()):
            self._retry_fill = self.reactor.callLater(1.0, self.fill)

    def _cancel_unstarted(self, task: Task, error: str = "cancelled before it started") -> Task:
        cancelled = task.moved(TaskState.CANCELLED, finished_at=self.reactor.seconds(), error=error)
        self.store.save(cancelled)
        self.bus.publish("task:cancelled", task_event(cancelled))
        return cancelled

    def _active_count(self) -> int:
        """Slots taken: each running plain task until its agent exits, and each loop
        from its first iteration to its end, checks and all."""
        looping = self.loops.active
        return (sum(1 for run in self.runs.values() if not run.has_exited and run.task.id not in looping)
                + len(looping) + len(self.isolation.preparing))

    def current_launch(self) -> AgentLaunch:
        return self.launcher.current()

    def task_env(self, task: Task, launch: AgentLaunch) -> tuple[dict[str, str], list[str]]:
        return self.launcher.task_env(task, launch)

    def missing_agent_message(self) -> str:
        return self.launcher.missing_agent_message()

    def agent_check(self) -> dict[str, Any]:
        return self.launcher.agent_check()

    def fail_now(self, task: Task, error: str, **changes: Any) -> None:
        """A task that could not be started at all: failed, recorded, announced."""
        failed = task.moved(TaskState.FAILED, finished_at=self.reactor.seconds(), error=error, **changes)
        self.store.save(failed)
        self.log.error("task {task_id} failed: {error}", task_id=task.id, error=error)
        self.bus.publish("task:failed", task_event(failed))

    def _spawn(self, task: Task, launch: "AgentLaunch", queued: Task | None = None) -> None:
        self.agent_starts.spawn(task, launch, queued)

    def start_run(self, task: Task, executable: str, argv: list[str], env: dict[str, str], secrets: list[str],
                  minutes: float, **options: Any) -> AgentProcess:
        """One of a task's processes, started (see AgentStarts.start_run)."""
        return self.agent_starts.start_run(task, executable, argv, env, secrets, minutes, **options)

    def _exited(self, exit: Exit, run: AgentProcess) -> Exit:
        """An agent process is gone: its slot is free for the next task."""
        if run.task.loop is None and exit.reason is None:
            # Durable at once: should the daemon die while something still holds the
            # agent's pipes, the restart settles the task by this exit.
            run.task = run.task.but(exit_code=exit.code, signal=exit.signal)
            self.store.save(run.task)
        self.reactor.callLater(0, self.fill)
        return exit

    def _ended(self, exit: Exit, run: AgentProcess) -> Exit:
        """A process's output is all in: it no longer counts as running."""
        self.runs.pop(run.task.id, None)
        self.housekeeping.sweep_soon()
        return exit

    def _agent_ended(self, exit: Exit, run: AgentProcess) -> Exit:
        """A plain task's agent is over: record its final state and tell everyone."""
        try:
            self.settle(self._final(run), run)
        except Exception:
            self.log.failure("task {task_id}: cannot record how it ended", task_id=run.task.id)
        self.fill()  # the next start shares this commit
        return exit

    def settle(self, final: Task, run: AgentProcess | None = None) -> None:
        """Record a task's state at the end of a run, log it and announce it; an
        isolated task's changes are collected on its branch first."""
        if final.workspace is not None and final.workspace.state in ("preparing", "active"):
            self.isolation.collect(final).addCallback(self._settle, run).addErrback(
                lambda f: self.log.failure("task {task_id}: cannot record how it ended", f, task_id=final.id))
            return
        self._settle(final, run)

    def _settle(self, final: Task, run: AgentProcess | None = None) -> None:
        self.store.save(final)
        if final.state != TaskState.QUEUED:
            if not self.reaper.release_cgroup(final.id):
                self.housekeeping.sweep_soon()
        if run is not None and run.emitted > TRIM_AFTER_BYTES:
            trim_heap()
        topic = {
            TaskState.COMPLETED: "task:completed",
            TaskState.FAILED: "task:failed",
            TaskState.CANCELLED: "task:cancelled",
            TaskState.TIMEOUT: "task:timeout",
            TaskState.QUEUED: "task:queued",
        }[final.state]
        if final.state == TaskState.QUEUED and not self.executors.route(final):
            self.queue.push(final.id, final.priority, final.seq)
        if run is not None:
            code: Any = run.exit_code if run.exit_signal is None else f"signal {run.exit_signal}"
        else:
            code = final.exit_code
        self.log.info(
            "task {task_id} {state} (exit {code}, {duration:.1f}s){error}",
            task_id=final.id,
            state=final.state.value,
            code=code,
            duration=final.duration or 0.0,
            error=f": {final.error}" if final.error and final.state != TaskState.COMPLETED else "",
        )
        self.bus.publish(topic, task_event(final))

    def _final(self, run: AgentProcess) -> Task:
        return run_outcome(run.task, run.end(self.settings.agent.output), self.reactor.seconds(),
                           self.settings.timeout_minutes)

    # -- reload / status ---------------------------------------------------

    def apply_config(self, config: Config) -> None:
        old = self.settings.max_parallel
        self.settings = SupervisorSettings.from_config(config)
        if self.settings.max_parallel != old:
            self.log.info(
                "max_parallel_actions {old} → {new} (running tasks are not interrupted)",
                old=old, new=self.settings.max_parallel,
            )
        self.reactor.callLater(0, self.fill)
        self.executors.apply()

    def health_issues(self) -> list[str]:
        issues = self.executors.health_issues()
        if not self.agent_check()["found"]:
            issues.append(self.missing_agent_message())
        if self.exhausted is not None:
            issues.append(self.exhausted)
        output = self.housekeeping.output_issue()
        if output is not None:
            issues.append(output)
        return issues

    def stats(self) -> dict[str, int]:
        return status.stats(self)

    def summary(self, limit: int = 20) -> dict[str, Any]:
        return status.summary(self, limit)

    def status(self) -> dict[str, Any]:
        return status.supervisor_status(self)
