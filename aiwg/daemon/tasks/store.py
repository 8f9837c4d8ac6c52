# tests: tests/daemon/test_store.py
"""The task store: SQLite in WAL mode with synchronous=FULL at .aiwg/daemon/tasks.db.

Every state change is committed before anyone is told about it, so a crash
loses nothing that was acknowledged. The hot paths — list by state, stats,
next to run — are served by indexes and a counts table kept by triggers, never
by scanning all tasks; the counts are also kept in memory, so that `stats`
never waits for a commit. In the daemon, commits run on a thread of their own:
the reactor goes on serving while SQLite waits for the disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed

from aiwg.core.tasks import STATE_NAMES, Task, TaskState
from aiwg.daemon.tasks.commits import CommitThread
from aiwg.daemon.tasks.rows import (COLUMNS, SCHEMA_VERSION, SELECT_ONE, StoreError, checked_row, from_row,
                                    migrate, to_row, write_rows)
from aiwg.daemon.tasks.tasks_json import from_node
from aiwg.paths import file_identity

#: States a task ends in: only these are ever deleted.
_FINISHED = ("completed", "failed", "cancelled", "timeout", "rejected")
#: Tasks kept in memory after their last write is durable (see TaskStore._recent).
RECENT_TASKS = 256
#: Queued tasks kept in memory likewise (see TaskStore._waiting).
WAITING_TASKS = 4096

__all__ = ["SCHEMA_VERSION", "DuplicateTask", "StoreError", "StoreService", "TaskStore", "open_store"]


class DuplicateTask(StoreError):
    """`insert` of an id the store already holds."""


class _Write:
    """A task as last written, not yet known to be on disk: `batch` is the commit
    that carries it."""

    __slots__ = ("task", "row", "batch")

    def __init__(self, task: Task, row: tuple[Any, ...], batch: int) -> None:
        self.task, self.row, self.batch = task, row, batch


class TaskStore:
    """Writes are grouped: `insert` and `save` take effect in memory at once (reads
    see them) and reach the disk in one transaction — one fsync — per reactor turn,
    or sooner when `commit()` is called (before an agent is spawned, so a task is
    recorded as running before it can run). `when_durable()` fires after the
    commit that carries everything written so far.

    With `deliver` (reactor.callFromThread), commits run on a CommitThread, one at
    a time: what is written while one is in flight goes in the next. Reads of one
    task and of the counts never wait for the disk; list, state and prune
    queries first wait (`flush()`) for every write to be committed. Without
    `deliver`, commits run on the caller's thread; without `schedule` too, every
    write commits at once."""

    def __init__(
        self, path: Path, schedule: Callable[..., Any] | None = None,
        deliver: Callable[..., Any] | None = None,
    ) -> None:
        if sqlite3.sqlite_version_info < (3, 24, 0):
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the task store needs 3.24 or newer")
        self.path = path
        fresh = not path.exists()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        if fresh:
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self.imported = 0
        self._schedule = schedule
        self._unsaved: dict[str, _Write] = {}
        self._batch = 1  # the commit that the next write joins
        self._open_writes = 0  # writes in that batch
        self._inflight: tuple[int, list[str]] | None = None  # with a thread: batch, task ids
        self._waiters: dict[int, list[Deferred]] = {}  # by batch
        self._flush_scheduled = False
        self._next_seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]) + 1
        self._counts = self._counts_on_disk()
        self._read_states: dict[str, str] = {}
        #: The latest version of the tasks written most recently, once durable (the
        #: oldest are dropped first): a running task is read and saved again and
        #: again (started, its pid, its exit, its end), and this spares the reads.
        self._recent: dict[str, Task] = {}
        #: The same for queued tasks, kept apart and more of them: each will be
        #: read again when it starts, which in a backlog of more than
        #: RECENT_TASKS tasks would otherwise be a query on the reactor each.
        self._waiting: dict[str, Task] = {}
        self.commits = 0
        self.failed_flushes = 0
        self.last_error = ""
        self._thread: CommitThread | None = None
        self._reader = self._db
        if deliver is not None:
            # Reads go through a connection of their own: WAL lets them go on while
            # the writer's connection is busy committing on its thread.
            self._reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=1")
            self._thread = CommitThread(deliver)

    # -- schema ------------------------------------------------------------

    def _migrate(self) -> None:
        migrate(self._db, self.path)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """For the rare writes outside the group commit (schema, import, prune)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._thread.stop()
                self._thread = None
                self._reader.close()
            self._db.close()

    # -- writes ------------------------------------------------------------

    def insert(self, task: Task) -> Task:
        """Add a task; it gets the next `seq` (submission order) at once."""
        if task.id in self._unsaved or self._state_on_disk(task.id) is not None:
            raise DuplicateTask(f"task {task.id} already exists")
        task = task.but(seq=self._next_seq)
        row = checked_row(task)
        self._next_seq += 1
        self._unsaved[task.id] = _Write(task, row, self._batch)
        self._open_writes += 1
        self._counts[task.state.value] += 1
        self._written()
        return task

    def save(self, task: Task) -> None:
        """Record every field of an existing task."""
        last = self._unsaved.get(task.id)
        if last is None:
            old = self._state_on_disk(task.id)
            if old is None:
                raise StoreError(f"task {task.id} is not in the store")
        else:
            old = last.task.state.value
        row = checked_row(task)
        if last is None or last.batch != self._batch:
            self._open_writes += 1
        self._unsaved[task.id] = _Write(task, row, self._batch)
        self._counts[old] -= 1
        self._counts[task.state.value] += 1
        self._written()

    def withdraw(self, task_id: str) -> bool:
        """Forget a task whose insert never reached the disk (its commit failed and
        its submitter was told so): it never existed. False if it is on disk."""
        if self._inflight is not None and task_id in self._inflight[1]:
            try:
                self.flush()  # settle the commit under way first (a full disk fails it fast)
            except Exception:
                pass
        last = self._unsaved.get(task_id)
        if last is None or self._state_on_disk(task_id) is not None:
            return False
        del self._unsaved[task_id]
        if last.batch == self._batch:
            self._open_writes = max(0, self._open_writes - 1)
            if not self._open_writes:  # nothing left to commit: its waiters have all they wait for
                for d in self._waiters.pop(self._batch, []):
                    d.callback(None)
        self._counts[last.task.state.value] -= 1
        return True

    def _written(self) -> None:
        if self._schedule is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._schedule(self._scheduled_flush, 0)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self._thread is not None:
            if self._inflight is None and self._open_writes:
                self._send_batch()
            return
        try:
            self.flush()
        except Exception:
            pass  # the waiters got the failure; _settle arranged the retry

    def commit(self) -> Deferred:
        """Start committing what has been written now, rather than at the end of
        the turn; fires when it is durable (at once, without a thread)."""
        if self._thread is None:
            try:
                self.flush()
            except Exception as exc:
                return fail(StoreError(f"cannot write {self.path}: {exc}"))
            return succeed(None)
        if self._inflight is None and self._open_writes:
            self._send_batch()
        return self.when_durable()

    def flush(self) -> None:
        """Commit every write so far and wait for it, blocking: for reads that
        need SQL, and for close. Raises if that commit fails (the writes stay)."""
        while self._thread is not None and self._inflight is not None:
            number = self._inflight[0]
            self._settle(number, self._thread.wait(number))  # may send the next batch
        if not self._open_writes:
            return
        number, ids, job = self._take_batch()
        if self._thread is None:
            try:
                job()
                outcome: BaseException | None = None
            except Exception as exc:
                outcome = exc
        else:
            self._inflight = (number, ids)
            self._thread.submit(number, job, self._settle)
            outcome = self._thread.wait(number)
        self._settle(number, outcome, ids)
        if outcome is not None:
            raise outcome

    def _take_batch(self) -> tuple[int, list[str], Callable[[], None]]:
        """Close the open batch: its number, its task ids, and the job that writes
        it in one transaction."""
        number = self._batch
        self._batch += 1
        self._open_writes = 0
        writes = [w for w in self._unsaved.values() if w.batch == number]
        rows = [(w.task.seq, *w.row) for w in writes]
        return number, [w.task.id for w in writes], partial(write_rows, self._db, rows)

    def _send_batch(self) -> None:
        assert self._thread is not None
        number, ids, job = self._take_batch()
        self._inflight = (number, ids)
        self._thread.submit(number, job, self._settle)

    def _settle(self, number: int, error: BaseException | None, ids: list[str] | None = None) -> None:
        """Batch `number` is done: forget what it made durable, or put its writes
        back in the open batch after a failure; wake its waiters; send the next."""
        if self._inflight is not None and self._inflight[0] == number:
            ids = self._inflight[1]
            self._inflight = None
        elif ids is None:
            return  # already settled by a flush() that waited for it
        if error is None:
            self.commits += 1
            self.failed_flushes = 0
            recent, waiting, queued = self._recent, self._waiting, TaskState.QUEUED
            for task_id in ids:
                last = self._unsaved.get(task_id)
                if last is not None and last.batch == number:
                    del self._unsaved[task_id]
                    recent.pop(task_id, None)
                    waiting.pop(task_id, None)
                    # Every write passes through _unsaved: this is the disk's version.
                    (waiting if last.task.state is queued else recent)[task_id] = last.task
            while len(recent) > RECENT_TASKS:
                del recent[next(iter(recent))]
            while len(waiting) > WAITING_TASKS:
                del waiting[next(iter(waiting))]
        else:
            self.failed_flushes += 1
            self.last_error = str(error)
            for task_id in ids:
                last = self._unsaved.get(task_id)
                if last is not None and last.batch == number:
                    last.batch = self._batch
                    self._open_writes += 1
        self._wake(number, error)
        if error is not None:
            # Try again soon, not only when the next write comes.
            if self._schedule is not None and not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule(self._scheduled_flush, min(30.0, 0.5 * self.failed_flushes))
        elif self._thread is not None and self._open_writes and self._inflight is None:
            self._send_batch()  # group commit: what came in meanwhile goes now

    def when_durable(self) -> Deferred:
        """Fires once everything written so far is committed."""
        if self._open_writes:
            number = self._batch
        elif self._inflight is not None:
            number = self._inflight[0]
        else:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.setdefault(number, []).append(d)
        return d

    def _wake(self, number: int, error: BaseException | None) -> None:
        """Fire the waiters of batch `number` and of any earlier one."""
        ready = [self._waiters.pop(n) for n in sorted(n for n in self._waiters if n <= number)]
        for waiters in ready:
            for d in waiters:
                if error is None:
                    d.callback(None)
                else:
                    d.errback(StoreError(f"cannot write {self.path}: {error}"))

    def exists(self, task_id: str) -> bool:
        return task_id in self._unsaved or self._state_on_disk(task_id) is not None

    def _state_on_disk(self, task_id: str) -> str | None:
        """For a task with no write pending: its state on disk. `get` has usually
        just read it (and the disk cannot have changed since: every write passes
        through `_unsaved`), which spares a query on the way to `save`."""
        state = self._read_states.pop(task_id, None)
        if state is not None:
            return state
        recent = self._durable(task_id)
        if recent is not None:
            return recent.state.value
        row = self._reader.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row[0] if row else None

    def _durable(self, task_id: str) -> Task | None:
        """The task as it is on disk, if it is one of those kept in memory."""
        return self._recent.get(task_id) or self._waiting.get(task_id)

    def _counts_on_disk(self) -> dict[str, int]:
        counts = dict(self._db.execute("SELECT state, count FROM task_counts").fetchall())
        return {name: int(counts.get(name, 0)) for name in STATE_NAMES}

    # -- reads -------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        last = self._unsaved.get(task_id)
        if last is not None:
            return last.task
        recent = self._durable(task_id)
        if recent is not None:
            return recent
        row = self._reader.execute(SELECT_ONE, (task_id,)).fetchone()
        if row is None:
            return None
        task = from_row(row)
        if len(self._read_states) > 1000:
            self._read_states.clear()
        self._read_states[task_id] = task.state.value  # what a save of it replaces
        return task

    def list(self, state: str | None = None, limit: int = 20, offset: int = 0,
             source: str | None = None) -> list[Task]:
        """Newest first; `source` is a glob (`rule:*`)."""
        self.flush()
        where, values = self._filter(state, source)
        rows = self._reader.execute(
            f"SELECT seq, {', '.join(COLUMNS)} FROM tasks{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*values, limit, offset),
        ).fetchall()
        return [from_row(r) for r in rows]

    def count(self, state: str | None = None, source: str | None = None) -> int:
        """How many tasks `list` would page through (counts by state alone come from memory)."""
        if source is None:
            return self.stats()["total"] if state is None else self.stats().get(state, 0)
        self.flush()
        where, values = self._filter(state, source)
        return int(self._reader.execute(f"SELECT COUNT(*) FROM tasks{where}", values).fetchone()[0])

    @staticmethod
    def _filter(state: str | None, source: str | None) -> tuple[str, list[str]]:
        clauses, values = [], []
        if state is not None:
            clauses.append("state = ?")
            values.append(state)
        if source is not None:
            clauses.append("source GLOB ?")
            values.append(source)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), values

    def in_state(self, state: TaskState) -> list[Task]:
        """Every task in `state`, in run order (for start-up: queued and running)."""
        self.flush()
        rows = self._reader.execute(
            f"SELECT seq, {', '.join(COLUMNS)} FROM tasks WHERE state = ? "
            "ORDER BY priority DESC, seq",
            (state.value,),
        ).fetchall()
        return [from_row(r) for r in rows]

    def stats(self) -> dict[str, int]:
        """Counts by state, as written (kept in memory: no disk read, no wait)."""
        stats = dict(self._counts)
        return {"total": sum(stats.values()), **stats}

    def all(self) -> Iterator[Task]:
        self.flush()
        rows = self._reader.execute(f"SELECT seq, {', '.join(COLUMNS)} FROM tasks ORDER BY seq")
        for row in rows:
            yield from_row(row)

    # -- retention ---------------------------------------------------------

    def prune(self, *, max_tasks: int, max_age_seconds: float, now: float) -> list[tuple[str, str | None]]:
        """Delete finished tasks beyond the newest `max_tasks` or older than the age
        limit (0 = no limit); returns (id, output_path) of each deleted task."""
        self.flush()  # the commit thread is idle from here until we return
        doomed: list[tuple[str, str | None, str]] = []
        if max_age_seconds > 0:
            doomed += self._db.execute(
                "SELECT id, output_path, state FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?",
                (now - max_age_seconds,),
            ).fetchall()
        if max_tasks > 0:
            doomed += self._db.execute(
                "SELECT id, output_path, state FROM tasks WHERE finished_at IS NOT NULL "
                "ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?",
                (max_tasks,),
            ).fetchall()
        return self._delete(doomed)

    def remove_finished(self, *, ids: list[str] | None = None, state: str | None = None,
                        finished_before: float | None = None) -> list[tuple[str, str | None]]:
        """Delete finished tasks: those of `ids`, or every one in `state` and/or
        finished before a time; (id, output_path) of each deleted. A task that has
        not finished is never deleted."""
        self.flush()
        where, values = ["finished_at IS NOT NULL", "state IN (%s)" % ", ".join("?" * len(_FINISHED))], \
            list(_FINISHED)
        if ids is not None:
            where.append("id IN (%s)" % ", ".join("?" * len(ids)))
            values += ids
        if state is not None:
            where.append("state = ?")
            values.append(state)
        if finished_before is not None:
            where.append("finished_at < ?")
            values.append(finished_before)
        doomed = self._db.execute(f"SELECT id, output_path, state FROM tasks WHERE {' AND '.join(where)}",
                                  values).fetchall()
        return self._delete(doomed)

    def _delete(self, doomed: list[tuple[str, str | None, str]]) -> list[tuple[str, str | None]]:
        unique = list(dict.fromkeys(doomed))
        if unique:
            with self._transaction():
                self._db.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i, _, _ in unique])
            for task_id, _, state in unique:
                self._counts[state] -= 1
                self._read_states.pop(task_id, None)
                self._recent.pop(task_id, None)
                self._waiting.pop(task_id, None)
        return [(i, path) for i, path, _ in unique]

    # -- AIWG tasks.json ---------------------------------------------------

    def import_tasks_json(self, path: Path, now: float) -> int:
        """Bring in the Node daemon's tasks.json (kept on disk). Tasks that were
        running there are recorded as interrupted; queued ones stay queued."""
        data = json.loads(path.read_text(encoding="utf-8"))
        records = data.get("tasks", []) if isinstance(data, dict) else []
        imported = 0
        with self._transaction():
            for record in records:
                task = from_node(record, now)
                if task is None or self._db.execute(
                    "SELECT 1 FROM tasks WHERE id = ?", (task.id,)
                ).fetchone():
                    continue
                self._db.execute(
                    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    to_row(task),
                )
                imported += 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('tasks_json_imported', ?)",
                (json.dumps({"path": str(path), "count": imported, "at": now}),),
            )
        self.imported = imported
        self._next_seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]) + 1
        self._counts = self._counts_on_disk()
        return imported

    def tasks_json_imported(self) -> bool:
        row = self._db.execute("SELECT 1 FROM meta WHERE key = 'tasks_json_imported'").fetchone()
        return row is not None


def open_store(
    db_path: Path, tasks_json: Path, now: float, schedule: Callable[..., Any] | None = None,
    deliver: Callable[..., Any] | None = None,
) -> TaskStore:
    """Open (or create) tasks.db; on first creation, import AIWG's tasks.json if present."""
    fresh = not db_path.exists()
    store = TaskStore(db_path, schedule, deliver)
    if fresh and tasks_json.exists() and not store.tasks_json_imported():
        try:
            store.import_tasks_json(tasks_json, now)
        except (OSError, ValueError) as exc:
            store.close()
            db_path.unlink(missing_ok=True)
            raise StoreError(f"cannot import {tasks_json}: {exc}") from None
    return store


class StoreService(Service):
    """Owns the database connections and the commit thread: opened after the lock
    is taken (never before twistd forks: a thread would not survive the fork),
    closed after the last state write that reads it. `clock` is the reactor: it
    runs the group commits' timers and takes their outcomes back from the thread."""

    name = "store"

    def __init__(self, *, db_path: Path, tasks_json: Path, clock: Any) -> None:
        self._db_path = db_path
        self._tasks_json = tasks_json
        self._clock = clock
        self.store: TaskStore | None = None
        self._opened: tuple[int, int] | None = None

    def startService(self) -> None:
        super().startService()
        self.store = open_store(
            self._db_path, self._tasks_json, self._clock.seconds(),
            schedule=lambda flush, delay: self._clock.callLater(delay, flush),
            deliver=self._clock.callFromThread,
        )
        self._opened = file_identity(self._db_path)

    def health_issues(self) -> list[str]:
        """Commits failing (a full disk: they are retried), or the database file
        deleted under the daemon (`rm -r .aiwg/daemon`): it goes on writing to the
        deleted file, and the next start has none of it."""
        issues = []
        if self.store is not None and self.store.failed_flushes:
            issues.append(f"task store {self._db_path} cannot be written ({self.store.last_error}); "
                          f"{self.store.failed_flushes} commit(s) failed, retrying: new tasks are refused "
                          "until it can")
        if self.store is None or self._opened is None or file_identity(self._db_path) == self._opened:
            return issues
        return [*issues, f"task store {self._db_path} was deleted while the daemon ran; what it holds is lost "
                "when the daemon stops: export it now (aiwg task export > tasks.json) and restart"]

    def stopService(self) -> None:
        """Waits for the last commits (a few ms: the supervisor has drained)."""
        super().stopService()
        if self.store is not None:
            self.store.close()
            self.store = None

    def abort_start(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def status(self) -> dict[str, Any]:
        return {"path": str(self._db_path), "imported_tasks_json": self.store.imported if self.store else 0}
