# tests: tests/daemon/test_store.py
"""The task store: SQLite in WAL mode with synchronous=FULL at .aiwg/daemon/tasks.db.

Every state change is committed before anyone is told about it, so a crash
loses nothing that was acknowledged. The hot paths — list by state, stats,
next to run — are served by indexes and a counts table kept by triggers, never
by scanning all tasks.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

from attrs import evolve
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from aiwg.core.tasks import INTERRUPTED, STATE_NAMES, Task, TaskState

SCHEMA_VERSION = 1

_COLUMNS = (
    "id", "prompt", "priority", "state", "source", "agent", "created_at", "started_at",
    "finished_at", "pid", "pgid", "proc_start", "exit_code", "signal", "timeout_minutes",
    "error", "output_path", "output_tail", "output_bytes", "result", "session_id", "cost_usd",
    "metadata", "retries", "attempts",
)

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            prompt TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            source TEXT NOT NULL,
            agent TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            pid INTEGER,
            pgid INTEGER,
            proc_start TEXT,
            exit_code INTEGER,
            signal INTEGER,
            timeout_minutes REAL,
            error TEXT,
            output_path TEXT,
            output_tail TEXT NOT NULL DEFAULT '',
            output_bytes INTEGER NOT NULL DEFAULT 0,
            result TEXT,
            session_id TEXT,
            cost_usd REAL,
            metadata TEXT NOT NULL DEFAULT '{}',
            retries INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX tasks_by_state ON tasks(state, seq)",
        "CREATE INDEX tasks_to_run ON tasks(priority DESC, seq) WHERE state = 'queued'",
        "CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL",
        "CREATE TABLE task_counts (state TEXT PRIMARY KEY, count INTEGER NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO task_counts(state, count) VALUES "
        + ", ".join(f"('{s}', 0)" for s in STATE_NAMES),
        """CREATE TRIGGER count_insert AFTER INSERT ON tasks BEGIN
            UPDATE task_counts SET count = count + 1 WHERE state = NEW.state; END""",
        """CREATE TRIGGER count_delete AFTER DELETE ON tasks BEGIN
            UPDATE task_counts SET count = count - 1 WHERE state = OLD.state; END""",
        """CREATE TRIGGER count_update AFTER UPDATE OF state ON tasks
            WHEN OLD.state <> NEW.state BEGIN
            UPDATE task_counts SET count = count - 1 WHERE state = OLD.state;
            UPDATE task_counts SET count = count + 1 WHERE state = NEW.state; END""",
    ],
}


class StoreError(Exception):
    pass


class TaskStore:
    """Writes are grouped: `insert` and `save` take effect in memory at once (reads
    see them) and reach the disk in one transaction — one fsync — per reactor turn,
    or sooner when `flush()` is called (before an agent is spawned, so a task is
    recorded as running before it can run). `when_durable()` fires after the next
    commit. Without `schedule`, every write commits at once."""

    def __init__(self, path: Path, schedule: Callable[..., Any] | None = None) -> None:
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
        self._pending: dict[str, tuple[Task, bool]] = {}
        self._waiters: list[Deferred] = []
        self._flush_scheduled = False
        self._next_seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]) + 1
        self.commits = 0
        self.failed_flushes = 0

    # -- schema ------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer aiwg (schema {version} > {SCHEMA_VERSION}); "
                "upgrade aiwg-daemon"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                for statement in _MIGRATIONS[target]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")

    def _transaction(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    # -- writes ------------------------------------------------------------

    def insert(self, task: Task) -> Task:
        """Add a task; it gets the next `seq` (submission order) at once."""
        if task.id in self._pending or self._exists_on_disk(task.id):
            raise StoreError(f"task {task.id} already exists")
        _check_row(task)
        task = evolve(task, seq=self._next_seq)
        self._next_seq += 1
        self._pending[task.id] = (task, True)
        self._written()
        return task

    def save(self, task: Task) -> None:
        """Record every field of an existing task."""
        pending = self._pending.get(task.id)
        if pending is None and not self._exists_on_disk(task.id):
            raise StoreError(f"task {task.id} is not in the store")
        _check_row(task)
        self._pending[task.id] = (task, pending[1] if pending else False)
        self._written()

    def _written(self) -> None:
        if self._schedule is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._schedule(self._scheduled_flush, 0)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception:
            # The waiters got the failure; the writes stay pending. Try again soon,
            # not only when the next write comes.
            self.failed_flushes += 1
            if self._schedule is not None and not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule(self._scheduled_flush, min(30.0, 0.5 * self.failed_flushes))

    def flush(self) -> None:
        """Commit every pending write in one transaction, then wake the waiters."""
        if not self._pending:
            self._wake(None)
            return
        pending, self._pending = self._pending, {}
        inserts = [(t.seq, *_to_row(t)) for t, new in pending.values() if new]
        updates = [(*_to_row(t)[1:], t.id) for t, new in pending.values() if not new]
        try:
            with self._transaction():
                if inserts:
                    self._db.executemany(
                        f"INSERT INTO tasks (seq, {', '.join(_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
                        inserts,
                    )
                if updates:
                    assignments = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
                    self._db.executemany(f"UPDATE tasks SET {assignments} WHERE id = ?", updates)
        except Exception as exc:
            for task_id, entry in pending.items():
                self._pending.setdefault(task_id, entry)
            self._wake(exc)
            raise
        self.commits += 1
        self.failed_flushes = 0
        self._wake(None)

    def when_durable(self) -> Deferred:
        """Fires once everything written so far is committed."""
        if not self._pending:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def _wake(self, error: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if error is None:
                d.callback(None)
            else:
                d.errback(StoreError(f"cannot write {self.path}: {error}"))

    def exists(self, task_id: str) -> bool:
        return task_id in self._pending or self._exists_on_disk(task_id)

    def _exists_on_disk(self, task_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is not None

    # -- reads -------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        pending = self._pending.get(task_id)
        if pending is not None:
            return pending[0]
        row = self._db.execute(
            f"SELECT seq, {', '.join(_COLUMNS)} FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        return _from_row(row) if row else None

    def list(self, state: str | None = None, limit: int = 20, offset: int = 0) -> list[Task]:
        """Newest first."""
        self.flush()
        columns = f"seq, {', '.join(_COLUMNS)}"
        if state is None:
            rows = self._db.execute(
                f"SELECT {columns} FROM tasks ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset)
            )
        else:
            rows = self._db.execute(
                f"SELECT {columns} FROM tasks WHERE state = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                (state, limit, offset),
            )
        return [_from_row(r) for r in rows]

    def in_state(self, state: TaskState) -> list[Task]:
        """Every task in `state`, in run order (for start-up: queued and running)."""
        self.flush()
        rows = self._db.execute(
            f"SELECT seq, {', '.join(_COLUMNS)} FROM tasks WHERE state = ? "
            "ORDER BY priority DESC, seq",
            (state.value,),
        )
        return [_from_row(r) for r in rows]

    def stats(self) -> dict[str, int]:
        self.flush()
        counts = dict(self._db.execute("SELECT state, count FROM task_counts").fetchall())
        stats = {name: int(counts.get(name, 0)) for name in STATE_NAMES}
        return {"total": sum(stats.values()), **stats}

    def all(self) -> Iterator[Task]:
        self.flush()
        rows = self._db.execute(f"SELECT seq, {', '.join(_COLUMNS)} FROM tasks ORDER BY seq")
        for row in rows:
            yield _from_row(row)

    # -- retention ---------------------------------------------------------

    def prune(self, *, max_tasks: int, max_age_seconds: float, now: float) -> list[tuple[str, str | None]]:
        """Delete finished tasks beyond the newest `max_tasks` or older than the age
        limit (0 = no limit); returns (id, output_path) of each deleted task."""
        self.flush()
        doomed: list[tuple[str, str | None]] = []
        if max_age_seconds > 0:
            doomed += self._db.execute(
                "SELECT id, output_path FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?",
                (now - max_age_seconds,),
            ).fetchall()
        if max_tasks > 0:
            doomed += self._db.execute(
                "SELECT id, output_path FROM tasks WHERE finished_at IS NOT NULL "
                "ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?",
                (max_tasks,),
            ).fetchall()
        unique = list(dict.fromkeys(doomed))
        if unique:
            with self._transaction():
                self._db.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i, _ in unique])
        return unique

    # -- AIWG tasks.json ---------------------------------------------------

    def import_tasks_json(self, path: Path, now: float) -> int:
        """Bring in the Node daemon's tasks.json (kept on disk). Tasks that were
        running there are recorded as interrupted; queued ones stay queued."""
        data = json.loads(path.read_text(encoding="utf-8"))
        records = data.get("tasks", []) if isinstance(data, dict) else []
        imported = 0
        with self._transaction():
            for record in records:
                task = _from_node(record, now)
                if task is None or self._exists_on_disk(task.id):
                    continue
                self._db.execute(
                    f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    _to_row(task),
                )
                imported += 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('tasks_json_imported', ?)",
                (json.dumps({"path": str(path), "count": imported, "at": now}),),
            )
        self.imported = imported
        self._next_seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]) + 1
        return imported

    def tasks_json_imported(self) -> bool:
        row = self._db.execute("SELECT 1 FROM meta WHERE key = 'tasks_json_imported'").fetchone()
        return row is not None


_INT64 = (-(2**63), 2**63 - 1)


def _check_row(task: Task) -> None:
    """Refuse, at once and for this task only, a value SQLite cannot store; such a
    row would otherwise fail every later commit of the batch it sits in."""
    for value in _to_row(task):
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise StoreError(f"task {task.id}: integer out of range: {value}")
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise StoreError(f"task {task.id}: not a finite number: {value}")


def _to_row(task: Task) -> tuple[Any, ...]:
    return (
        task.id, task.prompt, task.priority, task.state.value, task.source, task.agent,
        task.created_at, task.started_at, task.finished_at, task.pid, task.pgid, task.proc_start,
        task.exit_code, task.signal, task.timeout_minutes, task.error, task.output_path,
        task.output_tail, task.output_bytes, task.result, task.session_id, task.cost_usd,
        json.dumps(dict(task.metadata), separators=(",", ":")), task.retries, task.attempts,
    )


def _from_row(row: tuple[Any, ...]) -> Task:
    values = dict(zip(("seq", *_COLUMNS), row))
    values["state"] = TaskState(values["state"])
    values["metadata"] = json.loads(values["metadata"] or "{}")
    values["output_tail"] = values["output_tail"] or ""
    return Task(**values)


def _iso_to_epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _from_node(record: Any, now: float) -> Task | None:
    """One task of AIWG's tasks.json ({id, prompt, agent, priority, state, createdAt,
    startedAt, completedAt, pid, result, error, output, metadata})."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    if not isinstance(record.get("prompt"), str):
        return None
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    source = "chat" if metadata.get("source") == "ipc-chat" else (
        f"rule:{metadata['ruleId']}" if isinstance(metadata.get("ruleId"), str) else "cli"
    )
    try:
        state = TaskState(record.get("state", "queued"))
    except ValueError:
        state = TaskState.FAILED
    error = record.get("error") if isinstance(record.get("error"), str) else None
    finished = _iso_to_epoch(record.get("completedAt"))
    if state == TaskState.RUNNING:
        state, error, finished = TaskState.FAILED, INTERRUPTED, now
    priority = record.get("priority")
    output = record.get("output") if isinstance(record.get("output"), str) else ""
    result = record.get("result")
    return Task(
        id=record["id"],
        prompt=record["prompt"],
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        state=state,
        source=source,
        agent=record.get("agent") if isinstance(record.get("agent"), str) else None,
        created_at=_iso_to_epoch(record.get("createdAt")) or now,
        started_at=_iso_to_epoch(record.get("startedAt")),
        finished_at=finished,
        error=error,
        output_tail=output[-16384:],
        result=result if isinstance(result, str) else None,
        metadata={**metadata, "imported_from": "tasks.json"},
    )



def open_store(
    db_path: Path, tasks_json: Path, now: float, schedule: Callable[..., Any] | None = None
) -> TaskStore:
    """Open (or create) tasks.db; on first creation, import AIWG's tasks.json if present."""
    fresh = not db_path.exists()
    store = TaskStore(db_path, schedule)
    if fresh and tasks_json.exists() and not store.tasks_json_imported():
        try:
            store.import_tasks_json(tasks_json, now)
        except (OSError, ValueError) as exc:
            store.close()
            db_path.unlink(missing_ok=True)
            raise StoreError(f"cannot import {tasks_json}: {exc}") from None
    return store


class StoreService(Service):
    """Owns the database connection: opened after the lock is taken (never before
    twistd forks), closed after the last state write that reads it."""

    name = "store"

    def __init__(self, *, db_path: Path, tasks_json: Path, clock: Any) -> None:
        self._db_path = db_path
        self._tasks_json = tasks_json
        self._clock = clock
        self.store: TaskStore | None = None

    def startService(self) -> None:
        super().startService()
        self.store = open_store(
            self._db_path, self._tasks_json, self._clock.seconds(),
            schedule=lambda flush, delay: self._clock.callLater(delay, flush),
        )

    def stopService(self) -> None:
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
