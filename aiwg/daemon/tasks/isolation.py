# tests: tests/daemon/test_worktrees.py, tests/e2e/test_isolation.py
"""Isolated tasks in the supervisor: the workspace step around an agent (prepare
before it starts, a commit per loop iteration, collect before the task's end is
recorded), their recovery after a crash, and the review of their branches
(diff, merge, discard), each recorded on the task and announced on the bus.

The step itself is a `WorkspaceStep` (here: git worktrees); this module keeps
the records and the order of things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

from aiwg.core import workspaces
from aiwg.core.tasks import Task, TaskState
from aiwg.core.timefmt import iso_utc
from aiwg.core.workspaces import REVIEWABLE, WorkspaceRecord
from aiwg.daemon.tasks.branches import Branches
from aiwg.daemon.tasks.worktrees import GitWorkspaces, MergeRefused, WorkspaceFailed
from aiwg.errors import BRANCH_REFUSED, InvalidParams, RpcError


class Isolation:
    log = Logger()

    def __init__(self, *, reactor: Any, root: Path, environ: Mapping[str, str], settings: Callable[[], Any],
                 store: Callable[[], Any], publish: Callable[..., Any]) -> None:
        self.reactor = reactor
        self._settings = settings
        self._store = store
        self.publish = publish
        self.step = GitWorkspaces(reactor=reactor, root=root, environ=environ, settings=settings)
        self.branches = Branches(self.step)
        self.cwds: dict[str, str] = {}  # the agent's working directory, while its workspace is live
        self.preparing: dict[str, bool] = {}  # task id → cancelled while its workspace was made
        self._pending: set[Deferred] = set()
        self.disk_bytes: int | None = 0
        self._disk_changed = False  # a worktree was made or removed since the last measure
        self._measuring = False
        self.problem: str | None = None

    @property
    def settings(self) -> Any:
        return self._settings()

    @property
    def store(self) -> Any:
        return self._store()

    def _track(self, coroutine: Any) -> Deferred:
        done = ensureDeferred(coroutine)
        self._pending.add(done)

        def forget(result: Any) -> Any:
            self._pending.discard(done)
            return result
        return done.addBoth(forget)

    def settled(self) -> Deferred:
        """Fires once every workspace step under way has ended (for the daemon's stop)."""
        return DeferredList(list(self._pending))

    def cwd(self, task: Task) -> str | None:
        return self.cwds.get(task.id)

    def initial(self, task: Task) -> WorkspaceRecord:
        """The record a task starts with (its branch is known before anything is made);
        WorkspaceError if tasks.branch_prefix cannot make one."""
        if task.workspace is not None and task.workspace.branch:
            return task.workspace.but(state="preparing")
        return WorkspaceRecord(branch=workspaces.workspace_for(task.id, self.settings.branch_prefix).branch)

    # -- around the agent ------------------------------------------------------------

    def prepare(self, task: Task) -> Deferred:
        """Fires with the task, its workspace live and recorded; fails with
        WorkspaceFailed (the message is the task's error)."""
        self.preparing[task.id] = False
        return self._track(self._prepare(task))

    async def _prepare(self, task: Task) -> Task:
        try:
            record, cwd = await self.step.prepare(task.id, task.base, task.workspace)
        finally:
            cancelled = self.preparing.pop(task.id, False)
        self.cwds[task.id] = cwd
        current = self.store.get(task.id) or task
        ready = current.but(workspace=record)
        self.store.save(ready)
        self._disk_changed = True
        if cancelled:
            raise Cancelled(ready)
        return ready

    def cancel_preparing(self, task_id: str) -> bool:
        if task_id not in self.preparing:
            return False
        self.preparing[task_id] = True
        return True

    async def checkpoint(self, task: Task, label: str) -> Task:
        """A commit on the branch of what the agent changed so far (a loop's iteration)."""
        if task.workspace is None or task.id not in self.cwds:
            return task
        message = workspaces.commit_message(task.id, task.prompt, label)
        try:
            record = await self.step.checkpoint(task.workspace, message)
        except WorkspaceFailed as exc:
            self.log.error("task {task_id}: {error}", task_id=task.id, error=str(exc))
            return task
        current = (self.store.get(task.id) or task).but(workspace=record)
        self.store.save(current)
        return current

    def collect(self, final: Task) -> Deferred:
        """Fires with `final` and its workspace collected: changes committed, the
        worktree removed (or kept), the branch measured, merged if tasks.merge says so."""
        return self._track(self._collect(final))

    async def _collect(self, final: Task, label: str | None = None) -> Task:
        record = final.workspace
        self.cwds.pop(final.id, None)
        if record is None or record.state not in ("preparing", "active"):
            return final
        keep = self.settings.keep_failed and final.terminal and final.state != TaskState.COMPLETED
        label = label or (final.state.value if final.terminal else "interrupted")
        message = workspaces.commit_message(final.id, final.prompt, label)
        try:
            record = await self.step.collect(record, message, keep=keep, final=final.terminal)
        except WorkspaceFailed as exc:
            self.log.error("task {task_id}: its changes could not be collected: {error}", task_id=final.id,
                           error=str(exc))
            record = record.but(state="kept", note=f"not collected: {exc}")
        self._disk_changed = True
        final = final.but(workspace=record)
        if final.state == TaskState.COMPLETED and record.state == "open":
            final = await self.after_completion(final)
        return final

    async def after_completion(self, task: Task) -> Task:
        """tasks.merge: "auto" merges now; "approval" waits for a person's word."""
        assert task.workspace is not None
        mode = self.settings.merge
        if mode == "approval":
            self.publish("task:awaiting_merge", {"taskId": task.id, "workspace": task.workspace.to_json(),
                                                 "prompt": task.prompt[:200], "source": task.source})
            return task.but(workspace=task.workspace.but(state="awaiting_merge"))
        if mode == "auto":
            try:
                record = await self.branches.merge(task.id, task.workspace, into=None, squash=False,
                                                   message=_merge_message(task))
            except (MergeRefused, WorkspaceFailed) as exc:
                self.log.warn("task {task_id}: not merged automatically: {why}", task_id=task.id, why=str(exc))
                return task.but(workspace=task.workspace.but(note=f"not merged automatically: {exc}"))
            self.publish("task:merged", {"taskId": task.id, "workspace": record.to_json()})
            return task.but(workspace=record)
        return task

    # -- at start ----------------------------------------------------------------------

    def recover(self, tasks: list[Task]) -> Deferred:
        """After a crash: the worktrees of tasks that were running get their changes
        committed as "interrupted" and are removed; strays go too."""
        return self._track(self._recover(tasks))

    async def _recover(self, tasks: list[Task]) -> None:
        leftover = set(self.step.leftovers())
        if not leftover and not any(t.isolate for t in tasks):
            return
        for task in tasks:
            if not task.isolate:
                continue
            if task.workspace is None:
                task = task.but(workspace=self.initial(task))
            record = task.workspace
            assert record is not None
            path = str(self.step.path_of(task.id).relative_to(self.step.root))
            if task.id in leftover:
                record = record.but(path=path, state="active")
            task = await self._collect(task.but(workspace=record), label="interrupted")
            self.store.save(task)
            self.log.warn("task {task_id}: what it had changed when the daemon stopped is on {branch}",
                          task_id=task.id, branch=record.branch)
        kept = set()
        for task_id in leftover:
            owner = self.store.get(task_id)
            if owner is not None and owner.workspace is not None and owner.workspace.state == "kept":
                kept.add(task_id)
        await self.step.remove_strays(kept)
        self._disk_changed = True

    # -- review ------------------------------------------------------------------------

    def _reviewable(self, task_id: str, doing: str) -> tuple[Task, WorkspaceRecord]:
        task = self.store.get(task_id)
        if task is None:
            raise InvalidParams(f"Task not found: {task_id} (parameter 'taskId')", {"taskId": task_id})
        if task.workspace is None:
            raise InvalidParams(f"task {task_id} did not run isolated, so it has no branch to {doing}",
                                {"param": "taskId"})
        if not task.terminal:
            raise RpcError(BRANCH_REFUSED, f"task {task_id} has not ended ({task.state}); cancel it or wait "
                           f"before you {doing} its branch", {"taskId": task_id})
        return task, task.workspace

    def diff(self, task_id: str, stat: bool) -> Deferred:
        task, record = self._reviewable(task_id, "diff")
        return ensureDeferred(self._refusing(self.branches.diff(task_id, record, stat=stat)))

    def merge(self, task_id: str, into: str | None, squash: bool, by: str = "ipc") -> Deferred:
        task, record = self._reviewable(task_id, "merge")
        if record.state not in REVIEWABLE:
            raise RpcError(BRANCH_REFUSED, f"task {task_id}'s branch cannot be merged: "
                           f"{workspaces.summary(record)}", {"taskId": task_id})

        async def merging() -> Task:
            merged = await self._refusing(self.branches.merge(task_id, record, into=into, squash=squash,
                                                              message=_merge_message(task)))
            done = (self.store.get(task_id) or task).but(workspace=merged)
            self.store.save(done)
            self.log.info("task {task_id}: merged into {into} by {by}", task_id=task_id, into=merged.merged_into,
                          by=by)
            self.publish("task:merged", {"taskId": task_id, "workspace": merged.to_json(), "by": by})
            return done
        return self._track(merging())

    def awaiting_merge(self, task_id: str) -> Task | None:
        """The task, if it completed and its branch awaits approval to merge
        (tasks.merge "approval"): then approving it merges, rejecting keeps."""
        task = self.store.get(task_id)
        if task is None or task.workspace is None or task.workspace.state != "awaiting_merge":
            return None
        return task

    def keep(self, task_id: str, by: str) -> Task:
        """A merge that awaited approval was rejected: the branch stays, for review."""
        task, record = self._reviewable(task_id, "keep")
        kept = task.but(workspace=record.but(state="open", note=f"merge rejected by {by}"))
        self.store.save(kept)
        return kept

    def discard(self, task_id: str, by: str = "ipc") -> Deferred:
        task, record = self._reviewable(task_id, "discard")
        if record.state in ("discarded", "empty"):
            raise RpcError(BRANCH_REFUSED, f"task {task_id} has no branch to discard: "
                           f"{workspaces.summary(record)}", {"taskId": task_id})

        async def discarding() -> Task:
            gone = await self._refusing(self.branches.discard(task_id, record))
            done = (self.store.get(task_id) or task).but(workspace=gone)
            self.store.save(done)
            self._disk_changed = True
            self.publish("task:discarded", {"taskId": task_id, "workspace": gone.to_json(), "by": by})
            return done
        return self._track(discarding())

    async def _refusing(self, coroutine: Any) -> Any:
        try:
            return await coroutine
        except MergeRefused as exc:
            raise RpcError(BRANCH_REFUSED, str(exc), {"files": exc.files}) from None
        except WorkspaceFailed as exc:
            raise RpcError(BRANCH_REFUSED, str(exc)) from None

    # -- status --------------------------------------------------------------------------

    def _measure_disk(self) -> None:
        """Measure the worktrees' disk use (a `du`, off the reactor) once something
        has made or removed one since the last measure: asked for by status,
        which the heartbeat reads every beat, never per task."""
        if not self._disk_changed or self._measuring:
            return
        self._disk_changed, self._measuring = False, True

        def measured(size: int | None) -> None:
            self.disk_bytes = size

        def done(_: Any) -> None:
            self._measuring = False

        ensureDeferred(self.step.disk_usage()).addCallbacks(measured, lambda _: None).addBoth(done)

    def status(self) -> dict[str, Any]:
        self._measure_disk()  # the figure shown is the last one measured
        return {
            "default": "worktree" if self.settings.default else "none",
            "live": len(self.cwds) + len(self.preparing),
            "worktrees": self.step.leftovers(),
            "diskBytes": self.disk_bytes,
            "merge": self.settings.merge,
        }


class Cancelled(Exception):
    """The task was cancelled while its workspace was being made."""

    def __init__(self, task: Task) -> None:
        super().__init__(task.id)
        self.task = task


def _merge_message(task: Task) -> str:
    words = " ".join(task.prompt.split())
    subject = f"Merge task {task.id}: {words}"
    if len(subject) > 72:
        subject = subject[:71].rstrip() + "…"
    return f"{subject}\n\nTask: {task.id}\nFinished: {iso_utc(task.finished_at or 0)}\n"

