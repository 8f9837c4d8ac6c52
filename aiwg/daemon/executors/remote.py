# tests: tests/e2e/test_remote.py
"""A remote executor on the reactor: its own queue of tasks, published to the
broker while its workers have free slots; each published task followed from the
events stream (claimed by a worker, its output, its end) into the same output
file, events and record as a local task; its branch fetched into the project
when it ends, so that review and merge work as for a local isolated task.

A task is recorded as running before it is published (a crash cannot publish it
twice). A worker whose lease on a task lapses is lost: the task fails with
"worker lost" (or is queued again if it has retries left). A daemon that stops
leaves its remote tasks running; at its next start it re-attaches to them.
An unreachable broker keeps tasks queued, with the reason in `task get` and
in health, and is looked at again every few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aiwg.core import agents, workspaces
from aiwg.core.outcomes import run_outcome
from aiwg.core.remote import LEASE_SECONDS, Payload, RemoteSettings, Report, run_id, shown_url
from aiwg.core.tasks import Change, RunQueue, Task, TaskState
from aiwg.core.timefmt import iso_utc
from aiwg.core.workspaces import WorkspaceRecord
from aiwg.daemon.executors.channel import Channel
from aiwg.daemon.tasks.git import GitError
from aiwg.daemon.tasks.process import AgentProcess

#: While tasks wait or run: how often the workers are looked at and leases checked.
LOOK_SECONDS = 2.0


class _NoProcess:
    """A remote run has no local process to signal."""

    def killpg(self, pgid: int, signum: int) -> None:
        pass

    def group_alive(self, pgid: int) -> bool:
        return False

    def kill_marked(self, task_id: str) -> bool:
        return False

    def kill_cgroup(self, task_id: str) -> None:
        pass


class RemoteExecutor:
    log = Logger()

    def __init__(self, sup: Any, settings: RemoteSettings, namespace: str,
                 channel: Callable[..., Channel] = Channel) -> None:
        self.sup = sup
        self.name = settings.kind
        self.settings = settings
        self.channel = channel(sup.reactor, settings, namespace, Path(sup.root), sup.environ)
        self.queue = RunQueue()
        self.runs: dict[str, AgentProcess] = {}
        self.claimed: set[str] = set()
        self.ending: set[str] = set()
        self.reachable: bool | None = None
        self.error: str | None = None
        self.stream_error: str | None = None
        self.workers: list[dict[str, Any]] = []
        self.depth: int | None = None
        self._looking = False
        self._loop: LoopingCall | None = None
        self._unpublished: set[str] = set()
        self._done_looks: dict[str, int] = {}
        self.looked_at: float | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self, running: list[Task]) -> None:
        """Start following, re-attached to the tasks a previous daemon left running."""
        self.channel.start()
        for task in running:
            self.runs[task.id] = self._sink(task, again=True)
            if task.worker:
                self.claimed.add(task.id)
            self.log.info("task {task_id}: re-attached to the remote run ({where})", task_id=task.id,
                          where=f"worker {task.worker}" if task.worker else "not yet claimed")
        self._unpublished = {t.id for t in running if not t.worker}
        self.channel.follow(self._handle, self._stream_trouble)
        self._wake()

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.channel.stop()

    def reconfigure(self, settings: RemoteSettings) -> None:
        self.settings = self.channel.settings = settings
        self.channel.reconnect()
        self._wake()

    def _wake(self) -> None:
        """Look now, and every few seconds while anything waits or runs."""
        if self._loop is None or not self._loop.running:
            self._loop = LoopingCall(self._look)
            self._loop.clock = self.sup.reactor
            self._loop.start(LOOK_SECONDS, now=True)

    # -- looking at the broker -----------------------------------------------------------

    def _look(self, force: bool = False) -> None:
        if not (self.queue or self.runs) and self.reachable is not None and not force:
            if self._loop is not None and self._loop.running:
                self._loop.stop()  # idle: no timer
            return
        if self._looking:
            return
        self._looking = True
        self.looked_at = self.sup.reactor.seconds()
        runs = {self._run(run.task): task_id for task_id, run in self.runs.items()}
        d = self.channel.call(lambda: (self.channel.look(), self.channel.states(sorted(runs)) if runs else {}, runs))
        d.addCallbacks(self._seen, self._unreachable)
        d.addErrback(lambda f: self.log.failure("executor {name}: a look at the broker failed", f, name=self.name))
        d.addBoth(lambda _: setattr(self, "_looking", False))

    def _seen(self, answer: tuple[dict[str, Any], dict[str, Any], dict[str, str]]) -> None:
        seen, states, runs = answer
        if self.reachable is False:
            self.log.info("executor {name}: broker {url} reachable again", name=self.name, url=self._url())
        self.reachable, self.error = True, None
        self.workers, self.depth = seen["workers"], seen["depth"]
        for run_key, (leased, state, report) in states.items():
            task_id = runs[run_key]
            if task_id not in self.runs or task_id in self.ending or self._run(self.runs[task_id].task) != run_key:
                continue
            if state == "finished" and report is not None:
                # Normally its end comes through the stream, after its output. Still
                # finished here three looks later, its entry was trimmed away (or the
                # stream cannot be read): the hash's report settles it.
                self._done_looks[task_id] = seen_times = self._done_looks.get(task_id, 0) + 1
                if seen_times >= 3:
                    self._finished(task_id, report)
            elif state is None and task_id in self._unpublished:
                self._publish(self.sup.store.get(task_id))  # recorded, never sent (the daemon died between)
            elif task_id in self.claimed and not leased and state != "finished":
                self._lost(task_id)
        self._unpublished.clear()
        self.dispatch()

    def _unreachable(self, failure: Any) -> None:
        why = str(failure.value) or failure.type.__name__
        if self.reachable is not False or self.error != why:
            self.log.warn("executor {name}: broker {url} unreachable: {why}; {n} task(s) wait",
                          name=self.name, url=self._url(), why=why, n=len(self.queue))
        self.reachable, self.error = False, why

    def _stream_trouble(self, error: str | None) -> None:
        self.stream_error = error

    def _url(self) -> str:
        try:
            return shown_url(self.channel.url("broker"))
        except ValueError:  # a variable that is not set: the template says which
            return self.settings.broker

    # -- the queue -----------------------------------------------------------------

    def enqueue(self, task: Task) -> None:
        """Queued; sent now if the workers were looked at a moment ago and have a
        free slot, else once they have been (an idle executor's view is stale)."""
        self.queue.push(task.id, task.priority, task.seq)
        if self._loop is not None and self._loop.running:
            self.dispatch()
        else:
            self._wake()

    def room(self) -> int:
        slots = self.settings.max_in_flight
        if slots is None:
            slots = sum(int(w.get("concurrency") or 0) for w in self.workers)
        return slots - len(self.runs)

    def waiting_reason(self) -> str | None:
        """Why queued tasks of this executor are not sent yet (None: they are about to be)."""
        if self.reachable is False:
            return f"executor {self.name}: broker {self._url()} unreachable ({self.error})"
        if self.reachable is None:
            return f"executor {self.name}: connecting to broker {self._url()}"
        if not self.workers and self.settings.max_in_flight is None:
            return f"executor {self.name}: no worker serves queue '{self.settings.queue}' (start one: aiwg worker)"
        if self.room() <= 0:
            return f"executor {self.name}: every worker slot is busy ({len(self.runs)} remote task(s) run)"
        return None

    def dispatch(self) -> None:
        """Record as running, then publish, as many queued tasks as there are free slots."""
        sup = self.sup
        if not sup._accepting or not sup._ready or not self.reachable:
            return
        starting = []
        while self.room() > 0 and self.queue:  # each start takes a slot at once (self.runs)
            task = sup.store.get(self.queue.pop() or "")
            if task is None or task.state != TaskState.QUEUED:
                continue
            try:
                branch = workspaces.workspace_for(task.id, sup.settings.isolation.branch_prefix).branch
            except workspaces.WorkspaceError as exc:
                sup.fail_now(task, str(exc), started_at=sup.reactor.seconds())
                continue
            running = task.moved(TaskState.RUNNING, started_at=sup.reactor.seconds(), attempts=task.attempts + 1,
                                 exit_code=None, signal=None, error=None, worker=None,
                                 output_path=task.output_path or str(sup.actions_dir / f"{task.id}.log"),
                                 workspace=WorkspaceRecord(branch=branch, base_ref=task.base))
            sup.store.save(running)
            self.runs[task.id] = self._sink(running)
            starting.append((task, running))
        if starting:
            sup.store.commit().addCallbacks(lambda _: [self._publish(r) for _, r in starting],
                                            self._not_recorded, errbackArgs=(starting,))

    def _not_recorded(self, failure: Any, starting: list[tuple[Task, Task]]) -> None:
        self.log.failure("executor {name}: cannot record tasks as running; not sending them", failure,
                         name=self.name)
        for queued, running in starting:
            self.runs.pop(running.id, None)
            self.sup.store.save(queued)
            self.queue.push(queued.id, queued.priority, queued.seq)

    def _publish(self, task: Task | None) -> None:
        if task is None or task.id not in self.runs:
            return
        sup = self.sup
        settings = sup.settings
        message = workspaces.commit_message(task.id, task.prompt, "completed")

        def send() -> str:
            base = self.channel.send_base(task.id, task.base or "HEAD")
            payload = Payload(
                namespace=self.channel.keys.namespace, task_id=task.id, prompt=task.prompt,
                program=settings.agent.program,
                argv=tuple(agents.build_argv(settings.agent, task.prompt, task.agent,
                                             resume=task.resume_session)),
                env={**settings.agent.env, **task.env}, output_format=settings.agent.output,
                timeout_seconds=(task.timeout_minutes or settings.timeout_minutes) * 60,
                kill_grace_seconds=settings.kill_grace, output_max_bytes=settings.output_max_bytes,
                git_remote=self.settings.git_remote, base=base, branch=self._branch(task),
                commit_message=message, author=settings.isolation.author, attempt=task.attempts)
            self.channel.publish(payload.run, payload.to_json())
            return base

        self.channel.call(send).addCallbacks(self._published, self._not_published, callbackArgs=(task,),
                                             errbackArgs=(task,))

    def _published(self, base: str, task: Task) -> None:
        if task.id not in self.runs:  # cancelled while it was being sent: the worker will skip it
            self.channel.call(self.channel.forget_refs, task.id, None)
            return
        current = self.sup.store.get(task.id) or task
        if current.workspace is not None:
            self.sup.store.save(current.but(workspace=current.workspace.but(base=base)))
        self.log.info("task {task_id} sent to executor {name} (queue {queue})", task_id=task.id, name=self.name,
                      queue=self.settings.queue)

    def _not_published(self, failure: Any, task: Task) -> None:
        run = self.runs.pop(task.id, None)
        if failure.check(GitError):
            error = f"cannot send the base commit to executors.{self.name}.git_remote: {failure.value}"
            self._end(task.moved(TaskState.FAILED, finished_at=self.sup.reactor.seconds(), error=error), run)
            return
        self._unreachable(failure)
        if run is not None:
            run.process_ended()
        back = task.moved(TaskState.QUEUED, started_at=None, attempts=task.attempts - 1, workspace=None)
        self.sup.store.save(back)
        self.queue.push(back.id, back.priority, back.seq)

    # -- following -------------------------------------------------------------------

    def _sink(self, task: Task, again: bool = False) -> AgentProcess:
        """Where a remote run's output goes: as a local agent's does (file, stream, result)."""
        s = self.sup.settings
        return AgentProcess(task, clock=self.sup.reactor, killer=_NoProcess(), publish=self.sup.bus.publish,
                            secrets=[], output_max_bytes=s.output_max_bytes, kill_grace=s.kill_grace,
                            shutdown_grace=s.shutdown_grace, append=again,
                            on_write_failed=self.sup.housekeeping.output_write_failed)

    def _handle(self, entries: list[tuple[str, Mapping[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            try:
                self._entry(fields)
            except Exception:  # one bad entry (a stray writer, a bug) must not hold up the rest
                self.log.failure("executor {name}: cannot handle event {entry_id} of the events stream",
                                 name=self.name, entry_id=entry_id)

    def _entry(self, fields: Mapping[bytes, bytes]) -> None:
        task_id = fields.get(b"task", b"").decode()
        run = self.runs.get(task_id)
        if run is None or task_id in self.ending or fields.get(b"run", b"").decode() != self._run(run.task):
            return  # an ended task's, or an earlier attempt's (a worker lost, and back)
        kind = fields.get(b"kind", b"")
        if kind == b"output":
            offset, data = int(fields[b"offset"]), fields[b"data"]
            skip = run.emitted - offset  # already had (a batch given again after a restart)
            if skip < len(data):
                run.received(int(fields.get(b"fd", b"1")), data[max(0, skip):])
        elif kind == b"claimed":
            self._claimed(task_id, fields.get(b"worker", b"?").decode("utf-8", "replace"))
        elif kind == b"finished":
            self._finished(task_id, Report.from_json(fields[b"report"]))

    def _claimed(self, task_id: str, worker: str) -> None:
        run = self.runs[task_id]
        self.claimed.add(task_id)
        run.task = (self.sup.store.get(task_id) or run.task).but(worker=worker)
        self.sup.store.save(run.task)
        self.sup.started_count += 1
        self.log.info("task {task_id} started on worker {worker}", task_id=task_id, worker=worker)
        self.sup.bus.publish("task:started", {"taskId": task_id, "pid": None, "priority": run.task.priority,
                                              "source": run.task.source, "executor": self.name, "worker": worker})

    def _finished(self, task_id: str, report: Report) -> None:
        run = self.runs.get(task_id)
        if run is None or task_id in self.ending:
            return
        self.ending.add(task_id)
        task = (self.sup.store.get(task_id) or run.task).but(worker=report.worker)
        record = task.workspace or WorkspaceRecord(branch=self._branch(task))
        if report.head and record.base:
            d = self.channel.call(self.channel.fetch_branch, task_id, record.branch, record.base, report.head)
            d.addCallback(lambda size: record.but(state="open", head=report.head, size=size))
        else:
            d = self.channel.call(lambda: None).addCallback(lambda _: record.but(state="empty"))
        d.addErrback(lambda f: record.but(state="kept", head=report.head,
                                          note=f"the branch could not be fetched from git_remote: {f.value}"))
        d.addCallback(self._collected, task, report, run)
        d.addErrback(lambda f: self.log.failure("task {task_id}: cannot record how it ended", f, task_id=task_id))

    def _collected(self, record: WorkspaceRecord, task: Task, report: Report, run: AgentProcess) -> Any:
        run.exit_code, run.exit_signal, run.reason = report.exit_code, report.signal, report.reason
        run.process_ended()
        now = self.sup.reactor.seconds()
        final = run_outcome(task, run.end(self.sup.settings.agent.output), now, self.sup.settings.timeout_minutes)
        if report.error and final.state != TaskState.CANCELLED:
            final = task.moved(TaskState.FAILED, finished_at=now, error=f"{report.error} (worker {report.worker})",
                               output_tail=final.output_tail, output_bytes=final.output_bytes)
        final = final.but(workspace=record)
        # The branch, once fetched, is the project's; one that could not be is left there.
        self.channel.call(self.channel.forget_refs, task.id, record.branch if record.state == "open" else None)
        if final.state == TaskState.COMPLETED and record.state == "open":
            return Deferred.fromCoroutine(self.sup.isolation.after_completion(final)).addCallback(self._end, run)
        self._end(final, run)
        return None

    def _end(self, final: Task, run: AgentProcess | None) -> None:
        self.runs.pop(final.id, None)
        self._done_looks.pop(final.id, None)
        self.claimed.discard(final.id)
        self.ending.discard(final.id)
        if run is not None and not run.ended.called:
            run.process_ended()
        self.sup._settle(final, run)
        self.dispatch()

    def _lost(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is None:
            return
        task = self.sup.store.get(task_id) or run.task
        error = (f"worker lost: {task.worker or 'the worker'} stopped renewing its lease on the task "
                 f"(none for {LEASE_SECONDS} s)")
        self.log.error("task {task_id}: {error}", task_id=task_id, error=error)
        self.channel.call(self.channel.cancel, self._run(task)).addErrback(lambda f: None)  # should it come back
        self.channel.call(self.channel.forget_refs, task_id, None).addErrback(lambda f: None)
        now = self.sup.reactor.seconds()
        if task.attempts <= task.retries:
            final = task.moved(TaskState.QUEUED, error=error, worker=None, workspace=None)
        else:
            final = task.moved(TaskState.FAILED, finished_at=now, error=error)
        self.ending.add(task_id)
        self._end(final, run)

    # -- cancel, status ------------------------------------------------------------------

    def cancel(self, task: Task) -> Change:
        if task.state == TaskState.QUEUED and self.queue.remove(task.id):
            return Change.made(self.sup._cancel_unstarted(task))
        run = self.runs.get(task.id)
        if run is None or task.id in self.ending:
            return Change(task.id, task, refused=f"task {task.id} has already ended ({task.state})"
                          if task.terminal else f"task {task.id} is already ending")
        self.channel.call(self.channel.cancel, self._run(run.task)).addErrback(
            lambda f: self.log.warn("task {task_id}: the cancel could not reach the broker: {why}",
                                    task_id=task.id, why=str(f.value)))
        if task.id not in self.claimed:  # not on a worker yet: the worker that takes it will skip it
            final = task.moved(TaskState.CANCELLED, finished_at=self.sup.reactor.seconds(),
                               error="cancelled before it started")
            self.ending.add(task.id)
            self._end(final, run)
            self.channel.call(self.channel.forget_refs, task.id, None)
        return Change.made(task)

    def status(self) -> dict[str, Any]:
        """As of the last look; an idle executor (no timer) looks again when asked."""
        now = self.sup.reactor.seconds()
        if self.looked_at is None or now - self.looked_at >= LOOK_SECONDS:
            self._look(force=True)
        return {
            "broker": self._url(), "queue": self.settings.queue, "git_remote": self.settings.git_remote,
            "reachable": self.reachable, "error": self.error, "workers": self.workers, "queue_depth": self.depth,
            "waiting": len(self.queue), "published": len(self.runs) - len(self.claimed),
            "running": len(self.claimed), "tasks": sorted(self.runs),
            "looked_at": iso_utc(self.looked_at) if self.looked_at is not None else None,
        }

    def health_issues(self) -> list[str]:
        issues = []
        if self.reachable is False:
            issues.append(f"executor {self.name}: broker {self._url()} unreachable ({self.error}); "
                          f"{len(self.queue)} task(s) wait")
        elif self.stream_error:
            issues.append(f"executor {self.name}: cannot read the events of remote tasks ({self.stream_error})")
        return issues

    @staticmethod
    def _run(task: Task) -> str:
        return run_id(task.id, task.attempts)

    def _branch(self, task: Task) -> str:
        return workspaces.workspace_for(task.id, self.sup.settings.isolation.branch_prefix).branch
