# tests: tests/daemon/test_store.py
"""The task table on disk: its schema and migrations, and a Task to and from a
row. One row per task; the daemon's own fields have columns of their own
(schema 3), and `metadata` is the client's, stored as given.
"""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache
from typing import Any

from aiwg.core.loops import LoopProgress, LoopSpec, LoopSpecError, loop_json
from aiwg.core.tasks import Task, TaskState
from aiwg.core.text import utf8_safe
from aiwg.core.timefmt import parse_iso
from aiwg.core.workspaces import WorkspaceRecord

SCHEMA_VERSION = 5

COLUMNS = (
    "id", "prompt", "priority", "state", "source", "agent", "created_at", "started_at",
    "finished_at", "pid", "pgid", "proc_start", "exit_code", "signal", "timeout_minutes",
    "error", "output_path", "output_tail", "output_bytes", "result", "session_id", "cost_usd",
    "metadata", "retries", "attempts",
    # schema 3: what the daemon owns, out of the client's metadata
    "env", "loop", "approval_expires_at", "approved_by", "rejected_by", "resume_session", "reply_to",
    "chain_depth",
    # schema 4: isolated tasks
    "isolate", "base", "workspace",
    # schema 5: remote executors
    "executor", "worker",
)

MIGRATIONS: dict[int, list[Any]] = {
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
        + ", ".join(f"('{s}', 0)" for s in ("queued", "running", "completed", "failed", "cancelled", "timeout")),
        """CREATE TRIGGER count_insert AFTER INSERT ON tasks BEGIN
            UPDATE task_counts SET count = count + 1 WHERE state = NEW.state; END""",
        """CREATE TRIGGER count_delete AFTER DELETE ON tasks BEGIN
            UPDATE task_counts SET count = count - 1 WHERE state = OLD.state; END""",
        """CREATE TRIGGER count_update AFTER UPDATE OF state ON tasks
            WHEN OLD.state <> NEW.state BEGIN
            UPDATE task_counts SET count = count - 1 WHERE state = OLD.state;
            UPDATE task_counts SET count = count + 1 WHERE state = NEW.state; END""",
    ],
    2: [  # approval gates: two more states to count
        "INSERT OR IGNORE INTO task_counts(state, count) VALUES ('awaiting_approval', 0), ('rejected', 0)",
    ],
    3: [  # the daemon's own fields: typed columns, no longer keys of the client's metadata
        "ALTER TABLE tasks ADD COLUMN env TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE tasks ADD COLUMN loop TEXT",
        "ALTER TABLE tasks ADD COLUMN approval_expires_at REAL",
        "ALTER TABLE tasks ADD COLUMN approved_by TEXT",
        "ALTER TABLE tasks ADD COLUMN rejected_by TEXT",
        "ALTER TABLE tasks ADD COLUMN resume_session TEXT",
        "ALTER TABLE tasks ADD COLUMN reply_to TEXT",
        "ALTER TABLE tasks ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0",
        lambda db: move_daemon_keys(db),
    ],
    4: [  # isolated tasks: a worktree and a branch of their own
        "ALTER TABLE tasks ADD COLUMN isolate INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN base TEXT",
        "ALTER TABLE tasks ADD COLUMN workspace TEXT",
    ],
    5: [  # remote executors: which ran it (NULL: the local one), and on which worker
        "ALTER TABLE tasks ADD COLUMN executor TEXT",
        "ALTER TABLE tasks ADD COLUMN worker TEXT",
    ],
}


def rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # nothing was left open


#: Rows per statement: 41 parameters each stays under SQLite's oldest limit (999).
_ROWS_PER_STATEMENT = 24
assert (len(COLUMNS) + 1) * _ROWS_PER_STATEMENT <= 999, "fewer rows per statement"


@lru_cache(maxsize=_ROWS_PER_STATEMENT)
def _upsert(rows: int) -> str:
    """One statement that writes `rows` whole tasks: new ids are inserted, known
    ones updated in place (their seq never changes); the count triggers see
    either. A new task on a seq that is taken fails the statement, as it should."""
    one = f"({', '.join('?' * (len(COLUMNS) + 1))})"
    return (
        f"INSERT INTO tasks (seq, {', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)} "
        f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS[1:])}"
    )


def write_rows(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Write (seq, *row) tuples in one transaction, waiting for it to be durable.
    Up to _ROWS_PER_STATEMENT rows it is a single statement, which SQLite runs as
    a transaction of its own: one call, during which Python is free to run the
    reactor (the commit thread then needs the interpreter lock once, not per row)."""
    chunks = [rows[i:i + _ROWS_PER_STATEMENT] for i in range(0, len(rows), _ROWS_PER_STATEMENT)]
    if len(chunks) == 1:
        db.execute(_upsert(len(rows)), [value for row in rows for value in row])
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for chunk in chunks:
            db.execute(_upsert(len(chunk)), [value for row in chunk for value in row])
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


#: Built once: json.dumps with options builds a new encoder on every call.
_METADATA = json.JSONEncoder(separators=(",", ":"))
_INT64 = (-(2**63), 2**63 - 1)
_INFINITIES = (float("inf"), float("-inf"))
SELECT_ONE = f"SELECT seq, {', '.join(COLUMNS)} FROM tasks WHERE id = ?"
#: Where a row holds numbers (the rest is text, JSON text or None).
_NUMBERS = tuple(i for i, name in enumerate(COLUMNS) if name in {
    "priority", "created_at", "started_at", "finished_at", "pid", "pgid", "exit_code", "signal",
    "timeout_minutes", "output_bytes", "cost_usd", "retries", "attempts", "approval_expires_at", "chain_depth", "isolate"})


def checked_row(task: Task) -> tuple[Any, ...]:
    """The task's row, refused at once and for this task only if it holds a value
    SQLite cannot store; such a row would otherwise fail every later commit of the
    batch it sits in."""
    row = to_row(task)
    for index in _NUMBERS:
        value = row[index]
        if value is None:
            continue
        if type(value) is float:
            if value != value or value in _INFINITIES:
                raise StoreError(f"task {task.id}: not a finite number: {value}")
        elif isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise StoreError(f"task {task.id}: integer out of range: {value}")
    return row


def _text(value: str | None) -> str | None:
    """A lone surrogate (from a JSON escape in an agent's reply or a chat message)
    would fail the whole commit, and every later one with it."""
    return value if value is None or value.isascii() else utf8_safe(value)


def to_row(task: Task) -> tuple[Any, ...]:
    return (
        task.id, _text(task.prompt), task.priority, task.state.value, _text(task.source), _text(task.agent),
        task.created_at, task.started_at, task.finished_at, task.pid, task.pgid, task.proc_start,
        task.exit_code, task.signal, task.timeout_minutes, _text(task.error), _text(task.output_path),
        _text(task.output_tail), task.output_bytes, _text(task.result), _text(task.session_id), task.cost_usd,
        _json(task.metadata), task.retries, task.attempts,
        _json(task.env), _json(loop_json(task.loop, task.progress)) if task.loop is not None else None,
        task.approval_expires_at, _text(task.approved_by), _text(task.rejected_by), _text(task.resume_session),
        _json(task.reply_to) if task.reply_to is not None else None, task.chain_depth,
        int(task.isolate), _text(task.base),
        _json(task.workspace.to_json()) if task.workspace is not None else None,
        task.executor, _text(task.worker),
    )


def _json(value: Any) -> str:
    return _METADATA.encode(dict(value)) if value else "{}"


def from_row(row: tuple[Any, ...]) -> Task:
    values = dict(zip(("seq", *COLUMNS), row))
    values["state"] = TaskState(values["state"])
    values["metadata"] = _object(values["metadata"])
    values["output_tail"] = values["output_tail"] or ""
    values["env"] = _object(values["env"])
    values["reply_to"] = _object(values["reply_to"]) if values["reply_to"] else None
    values["loop"], values["loop_progress"] = _loop(values["loop"])
    values["isolate"] = bool(values["isolate"])
    values["workspace"] = WorkspaceRecord.from_json(_object(values["workspace"])) if values["workspace"] else None
    return Task(**values)


def _object(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text and text != "{}" else {}


def _loop(text: str | None) -> tuple[LoopSpec | None, LoopProgress | None]:
    """A loop's settings and progress; the daemon wrote them checked, so a spec
    that no longer parses can only be a damaged row: run as a plain task."""
    if not text:
        return None, None
    data = json.loads(text)
    try:
        return LoopSpec.parse(data), LoopProgress.from_json(data)
    except LoopSpecError:
        return None, None


#: The keys of `metadata` that schema 2 used for the daemon's own state, each with
#: the column it moves to and whether a value is the daemon's (else it stays: a
#: client's own value under the same name, which the daemon never read).
_MOVED = {
    "_env": ("env", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
    "loop": ("loop", lambda v: isinstance(v, dict)),
    "approvalExpiresAt": ("approval_expires_at", lambda v: parse_iso(v) is not None),
    "approvedBy": ("approved_by", lambda v: isinstance(v, str)),
    "rejectedBy": ("rejected_by", lambda v: isinstance(v, str)),
    "resumeSession": ("resume_session", lambda v: isinstance(v, str) and bool(v)),
    "replyTo": ("reply_to", lambda v: isinstance(v, dict)),
    "chainDepth": ("chain_depth", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
}


def move_daemon_keys(db: sqlite3.Connection) -> None:
    """Schema 2 → 3: the daemon's keys out of each task's metadata into their
    columns (inside the migration's transaction)."""
    updates = []
    for seq, text in db.execute("SELECT seq, metadata FROM tasks WHERE metadata <> '{}'").fetchall():
        try:
            metadata = json.loads(text)
        except ValueError:
            continue
        if not isinstance(metadata, dict) or not metadata.keys() & _MOVED.keys():
            continue
        columns: dict[str, Any] = {}
        for key, (column, daemons) in _MOVED.items():
            if key in metadata and daemons(metadata[key]):
                value = metadata.pop(key)
                if column == "approval_expires_at":
                    value = parse_iso(value)
                elif column in ("env", "loop", "reply_to"):
                    value = _METADATA.encode(value)
                columns[column] = value
        if columns:
            names = sorted(columns)
            updates.append((f"UPDATE tasks SET metadata = ?, {', '.join(f'{n} = ?' for n in names)} WHERE seq = ?",
                            (_json(metadata), *(columns[n] for n in names), seq)))
    for statement, values in updates:
        db.execute(statement, values)


def migrate(db: sqlite3.Connection, path: Any) -> None:
    """Bring the schema up to SCHEMA_VERSION, one version per transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer aiwg (schema {version} > {SCHEMA_VERSION}); upgrade aiwg-daemon"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[target]:
                if callable(step):
                    step(db)
                else:
                    db.execute(step)
            db.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            rollback(db)
            raise
        db.execute("COMMIT")


class StoreError(Exception):
    pass
