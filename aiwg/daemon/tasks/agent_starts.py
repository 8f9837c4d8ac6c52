# tests: tests/daemon/test_supervisor.py, tests/e2e/test_tasks.py, tests/e2e/test_isolation.py
"""Starting a task's agent once its running state is durable: an isolated task's
worktree prepared first, the process spawned in its own session (cwd: the
project root, or the worktree), its deadline set; a machine out of descriptors
or processes puts the task back in the queue to be tried again with backoff.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from aiwg.core import agents
from aiwg.core.tasks import Task, TaskState
from aiwg.daemon.tasks.isolation import Cancelled
from aiwg.daemon.tasks.launch import AgentLaunch
from aiwg.daemon.tasks.process import AgentProcess
from aiwg.daemon.tasks.spawning import reap_exited
from aiwg.daemon.tasks.worktrees import WorkspaceFailed

#: Errors of a spawn that say the machine is out of something for now, not that
#: the agent cannot run: too many open files (per process, system-wide), too many
#: processes, no memory for one more.
EXHAUSTED_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM)
#: How long after its start an agent's process is checked to be in its task's
#: cgroup (it joins by itself; this is the fallback for when it could not).
CGROUP_CHECK_SECONDS = 0.2


def _joined_or_placed(reaper: Any, run: AgentProcess, task_id: str, pid: int) -> None:
    if not run.has_exited:
        reaper.place_in_cgroup(task_id, pid)


class AgentStarts:
    log = Logger()

    def __init__(self, supervisor: Any) -> None:
        self.sup = supervisor

    def spawn(self, task: Task, launch: "AgentLaunch", queued: Task | None = None) -> None:
        if task.isolate and task.id not in self.sup.isolation.cwds:
            self.sup.isolation.prepare(task).addCallbacks(
                self._prepared, self._not_prepared, callbackArgs=(launch, queued), errbackArgs=(task, queued))
            return
        if task.loop is not None:
            self.sup.loops.begin(task)
            return
        argv = agents.build_argv(self.sup.settings.agent, task.prompt, task.agent, resume=task.resume_session)
        env, secrets = self.sup.task_env(task, launch)
        try:
            run = self.start_run(task, launch.executable, argv, env, secrets,
                                 task.timeout_minutes or self.sup.settings.timeout_minutes)
            run.ended.addCallback(self.sup._agent_ended, run)
        except OSError as exc:
            if exc.errno in EXHAUSTED_ERRNOS and queued is not None:
                self._exhausted(queued, exc)
                return
            self.sup.fail_now(task, f"could not start the agent: {exc}")
            return
        except Exception as exc:
            self.sup.fail_now(task, f"could not start the agent: {exc}")
            return
        self.sup._exhaustion.succeeded()
        self.sup.exhausted = None
        self.log.info("task {task_id} started (pid {pid})", task_id=task.id, pid=run.pgid)
        self.sup.bus.publish("task:started", {"taskId": task.id, "pid": run.pgid, "priority": task.priority,
                                              "source": task.source})

    def _prepared(self, task: Task, launch: "AgentLaunch", queued: Task | None) -> None:
        """Its worktree is ready: the agent starts in it (unless the daemon is stopping)."""
        if self.sup._accepting:
            self.spawn(task, launch, queued)
        else:  # it never ran: queued again for the next start, its worktree collected
            again = queued if queued is not None else task.moved(TaskState.QUEUED)
            self.sup.settle(again.but(workspace=task.workspace))

    def _not_prepared(self, failure: Any, task: Task, queued: Task | None) -> None:
        if failure.check(Cancelled):
            ready = failure.value.task
            self.sup.settle(ready.moved(TaskState.CANCELLED, finished_at=self.sup.reactor.seconds(),
                                        error="cancelled before it started"))
            return
        if not failure.check(WorkspaceFailed):
            self.log.failure("task {task_id}: cannot prepare its worktree", failure, task_id=task.id)
        self.sup.fail_now(task.but(workspace=None), f"cannot prepare the task's worktree: {failure.value}")
        self.sup.fill()

    def _exhausted(self, queued: Task, exc: OSError) -> None:
        """The machine or the daemon is out of descriptors or processes: the task
        did not start, so it waits in the queue and the start is tried again later
        (with backoff), instead of failing what would run a moment later."""
        sup = self.sup
        delay = sup._exhaustion.failed()
        sup.exhausted = (f"cannot start agents: {exc.strerror or exc} (errno {exc.errno}); "
                         f"{len(sup.queue) + 1} task(s) wait, next try in {delay:.1f} s")
        if sup._exhaustion.failures == 1:
            self.log.error("{problem}", problem=sup.exhausted)
        sup.store.save(queued)
        sup.queue.push(queued.id, queued.priority, queued.seq)
        if sup._accepting and (sup._retry_fill is None or not sup._retry_fill.active()):
            sup._retry_fill = sup.reactor.callLater(delay, sup.fill)

    def start_run(self, task: Task, executable: str, argv: list[str], env: dict[str, str], secrets: list[str],
                  minutes: float, *, timeout: str = "timeout", append: bool = False, copy_to: Path | None = None,
                  offset: int = 0, counted: bool = True) -> AgentProcess:
        """Spawn one of a task's processes in its own session, its pid recorded and
        its timer set (`timeout`: the reason it is stopped with when that runs
        out); raises if it cannot be spawned. It holds the task's slot until it
        exits; once its output is all in it is forgotten, before the callbacks
        that its starter adds to `ended` run. `counted`: a start of an agent."""
        sup = self.sup
        settings = sup.settings
        run = AgentProcess(task, clock=sup.reactor, killer=sup.reaper, publish=sup.bus.publish, secrets=secrets,
                           output_max_bytes=settings.output_max_bytes, kill_grace=settings.kill_grace,
                           shutdown_grace=settings.shutdown_grace, append=append, copy_to=copy_to,
                           offset=offset, on_write_failed=sup.housekeeping.output_write_failed)
        before = sup._start_times.now()
        procs = sup.reaper.prepare_cgroup(task.id)  # the child moves itself in before it execs
        cwd = sup.isolation.cwd(task) or str(sup.root)
        pid = run.spawn(sup._spawn_process, executable, argv, env, cwd, {0: sup._devnull, 1: "r", 2: "r"},
                        **({"cgroup_procs": procs} if procs else {}))
        after = sup._start_times.now()
        if pid is not None and not run.has_exited and procs:
            # It joins its cgroup itself before it execs the agent. Moving it from
            # outside as well cost the reactor a cgroup migration per task; looked
            # at a moment later instead, it is moved only if it has not joined.
            sup.reactor.callLater(CGROUP_CHECK_SECONDS, _joined_or_placed, sup.reaper, run, task.id, pid)
        run.task = task.but(pid=pid, pgid=pid, proc_start=sup._start_times.of(pid, before, after))
        sup.store.save(run.task)
        sup.runs[task.id] = run
        if counted:
            sup.started_count += 1
        sup.housekeeping.busy()
        run.exited.addCallback(sup._exited, run)
        run.ended.addCallback(sup._ended, run)
        run.deadline(minutes * 60, lambda late: self._timed_out(late, minutes, timeout))
        return run

    def _timed_out(self, run: AgentProcess, minutes: float, reason: str) -> None:
        if run.pgid is not None and self.sup._has_exited(run.pgid):
            # It ended before its deadline, and the timer ran late (the daemon was
            # paused, overloaded, or the clock jumped): its own exit stands. Reap it now.
            reap_exited()
            if run.has_exited or self.sup._has_exited(run.pgid):
                self.log.info("task {task_id}: its agent had already exited when its timeout came due; "
                              "its own exit status stands", task_id=run.task.id)
                return
        what = {
            "timeout": "task {task_id} timed out after {minutes} min",
            "iteration-timeout": "task {task_id}: the agent's iteration timed out after {minutes} min",
            "check-timeout": "task {task_id}: the check timed out after {minutes} min",
        }.get(reason, "task {task_id}: stopped after {minutes} min")
        self.log.warn(what, task_id=run.task.id, minutes=minutes)
        run.stop(reason, self.sup.settings.kill_grace)
