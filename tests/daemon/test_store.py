"""The task store: group commit, read-your-writes, failures that stay local, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

from aiwg.core.tasks import Task, TaskState
from aiwg.daemon.store import StoreError, TaskStore


class Turns:
    """Collects scheduled flushes so the test decides when a 'reactor turn' ends."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[], None], float]] = []

    def __call__(self, func: Callable[[], None], delay: float) -> None:
        self.calls.append((func, delay))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for func, _ in calls:
            func()


def test_writes_are_visible_at_once_and_committed_together(tmp_path: Path) -> None:
    turns = Turns()
    store = TaskStore(tmp_path / "t.db", turns)
    a = store.insert(Task(id="t-a", prompt="a"))
    b = store.insert(Task(id="t-b", prompt="b", priority=3))
    assert (a.seq, b.seq) == (1, 2)
    assert store.get("t-b").priority == 3 and store.exists("t-a")
    durable = store.when_durable()
    assert not durable.called and store.commits == 0
    turns.run()
    assert durable.called and store.commits == 1
    other = sqlite3.connect(tmp_path / "t.db")
    assert other.execute("SELECT id FROM tasks ORDER BY seq").fetchall() == [("t-a",), ("t-b",)]
    store.save(store.get("t-a").moved(TaskState.RUNNING, pid=5))
    assert store.stats()["running"] == 1  # reads that need SQL commit first
    store.close()


def test_an_unstorable_value_fails_its_own_write_only(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db", Turns())
    with pytest.raises(StoreError, match="out of range"):
        store.insert(Task(id="t-big", prompt="x", priority=10**30))
    store.insert(Task(id="t-ok", prompt="fine"))
    store.flush()
    assert store.stats()["total"] == 1
    store.close()


def test_a_failed_commit_keeps_the_writes_and_retries(tmp_path: Path) -> None:
    turns = Turns()
    store = TaskStore(tmp_path / "t.db", turns)
    store.insert(Task(id="t-a", prompt="a"))
    waiter = store.when_durable()
    errors: list[Any] = []
    waiter.addErrback(errors.append)
    real = store._db
    store._db = _Broken(real)  # type: ignore[assignment]
    turns.run()
    assert errors and "cannot write" in str(errors[0].value)
    assert store.get("t-a") is not None
    [(retry, delay)] = turns.calls
    assert delay > 0
    store._db = real  # the disk is back
    turns.run()
    assert store.failed_flushes == 0 and store.stats()["total"] == 1
    store.close()


class _Broken:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("BEGIN"):
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def executemany(self, *args: Any) -> Any:
        return self._db.executemany(*args)


def test_schema_version_and_newer_databases_are_refused(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    store.close()
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer aiwg"):
        TaskStore(tmp_path / "t.db")


def test_seq_continues_after_reopen(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    store.insert(Task(id="t-1", prompt="x"))
    store.close()
    store = TaskStore(tmp_path / "t.db")
    assert store.insert(Task(id="t-2", prompt="y")).seq == 2
    store.close()
