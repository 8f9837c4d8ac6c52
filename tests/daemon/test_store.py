"""The task store: group commit (on a thread of its own in the daemon), read-your-writes,
failures that stay local, migrations."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from aiwg.core.loops import LoopProgress, LoopSpec
from aiwg.core.tasks import Task, TaskState
from aiwg.core.timefmt import parse_iso
from aiwg.daemon.ipc.records import record_json
from aiwg.daemon.tasks.rows import MIGRATIONS
from aiwg.daemon.tasks.store import SCHEMA_VERSION, StoreError, TaskStore
from tests.fakes.delivery import Delivered


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


def test_text_with_lone_surrogates_is_stored_escaped_and_commits_go_on(tmp_path: Path) -> None:
    """A lone surrogate (an agent's JSON reply, a chat message, a file name that is
    not UTF-8) cannot be encoded for SQLite: stored as its escape, it can no longer
    fail a commit, and with it every write after it."""
    store = TaskStore(tmp_path / "t.db", Turns())
    task = store.insert(Task(id="t-odd", prompt="fix src/bad\udcff.txt", metadata={"k": "\ud800"}))
    running = task.moved(TaskState.RUNNING)
    store.save(running)
    store.save(running.moved(TaskState.COMPLETED, result="said \ud83d alone", error="e\udc80"))
    store.insert(Task(id="t-next", prompt="next"))
    store.flush()
    store.close()
    reopened = TaskStore(tmp_path / "t.db", Turns())
    odd = reopened.get("t-odd")
    assert (odd.prompt, odd.result, odd.error) == ("fix src/bad\\udcff.txt", "said \\ud83d alone", "e\\udc80")
    assert odd.metadata == {"k": "\ud800"}  # JSON keeps its own escape
    assert reopened.get("t-next").prompt == "next" and reopened.stats()["total"] == 2
    reopened.close()


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
        if sql.startswith(("BEGIN", "INSERT", "UPDATE")):  # every write fails
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def executemany(self, *args: Any) -> Any:
        return self._db.executemany(*args)


def test_schema_version_and_newer_databases_are_refused(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    store.close()
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
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


def rows(path: Path) -> list[tuple[str, str]]:
    other = sqlite3.connect(path)
    try:
        return other.execute("SELECT id, state FROM tasks ORDER BY seq").fetchall()
    finally:
        other.close()


def test_commits_run_on_the_thread_and_are_reported_back(tmp_path: Path) -> None:
    turns, delivered = Turns(), Delivered()
    store = TaskStore(tmp_path / "t.db", turns, delivered)
    a = store.insert(Task(id="t-a", prompt="a"))
    durable = store.when_durable()
    turns.run()  # the end of the turn hands the batch to the thread
    assert not durable.called  # not until the reactor hears back
    delivered.run()
    assert durable.called and store.commits == 1
    assert rows(tmp_path / "t.db") == [("t-a", "queued")]
    store.save(a.moved(TaskState.RUNNING, pid=7))
    assert store.get("t-a").pid == 7 and store.stats()["running"] == 1  # no wait for the disk
    started = store.commit()  # sent now, not at the end of the turn
    delivered.run()
    assert started.called and rows(tmp_path / "t.db") == [("t-a", "running")]
    store.close()
    assert not [t for t in threading.enumerate() if t.name == "aiwg-store-commits"]


def test_writes_made_during_a_commit_go_in_the_next_one(tmp_path: Path) -> None:
    turns, delivered = Turns(), Delivered()
    store = TaskStore(tmp_path / "t.db", turns, delivered)
    store.insert(Task(id="t-a", prompt="a"))
    first = store.commit()
    b = store.insert(Task(id="t-b", prompt="b"))
    store.save(b.moved(TaskState.CANCELLED, finished_at=1.0))  # same batch: one row written
    second = store.commit()  # one commit in flight at a time: this one waits
    delivered.run()
    assert first.called and not second.called
    delivered.run()  # the first result sent the second batch
    assert second.called and store.commits == 2
    assert rows(tmp_path / "t.db") == [("t-a", "queued"), ("t-b", "cancelled")]
    assert store.get("t-b").seq == 2
    turns.run()
    store.close()


def test_list_waits_for_every_write_and_counts_match_the_table(tmp_path: Path) -> None:
    turns, delivered = Turns(), Delivered()
    store = TaskStore(tmp_path / "t.db", turns, delivered)
    tasks = [store.insert(Task(id=f"t-{i}", prompt=str(i))) for i in range(5)]
    store.commit()  # in flight when list() comes
    store.save(tasks[0].moved(TaskState.RUNNING))
    store.save(tasks[1].moved(TaskState.CANCELLED, finished_at=1.0))
    assert [t.id for t in store.list()] == ["t-4", "t-3", "t-2", "t-1", "t-0"]
    assert [t.state for t in store.list(state="running")] == [TaskState.RUNNING]
    delivered.run(2)  # both results come back late, to a store that has moved on
    assert store.stats() == {"total": 5, "awaiting_approval": 0, "queued": 3, "running": 1, "completed": 0,
                             "failed": 0, "cancelled": 1, "timeout": 0, "rejected": 0}
    other = sqlite3.connect(tmp_path / "t.db")
    assert dict(other.execute("SELECT state, count FROM task_counts").fetchall())["queued"] == 3
    other.close()
    store.prune(max_tasks=0, max_age_seconds=1, now=10.0)
    assert store.stats()["cancelled"] == 0 and store.stats()["total"] == 4
    turns.run()
    store.close()


def test_a_failed_commit_on_the_thread_keeps_the_writes_and_retries(tmp_path: Path) -> None:
    turns, delivered = Turns(), Delivered()
    store = TaskStore(tmp_path / "t.db", turns, delivered)
    real = store._db
    store._db = _Broken(real)  # type: ignore[assignment]
    store.insert(Task(id="t-a", prompt="a"))
    errors: list[Any] = []
    store.when_durable().addErrback(errors.append)
    turns.run()
    delivered.run()
    assert errors and "cannot write" in str(errors[0].value)
    assert store.get("t-a") is not None and store.stats()["queued"] == 1
    [(retry, delay)] = turns.calls
    assert delay > 0
    store._db = real  # the disk is back
    turns.run()
    delivered.run()
    assert store.failed_flushes == 0 and rows(tmp_path / "t.db") == [("t-a", "queued")]
    store.close()


def test_a_new_task_on_a_taken_seq_fails_instead_of_overwriting(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    store.insert(Task(id="t-a", prompt="a"))
    store._next_seq = 1  # as if two writers had picked the same place
    with pytest.raises(sqlite3.IntegrityError):
        store.insert(Task(id="t-b", prompt="b"))
    assert rows(tmp_path / "t.db") == [("t-a", "queued")]
    store._unsaved.clear()
    store._open_writes = 0
    store.close()


def test_a_version_1_database_is_migrated_and_counts_the_approval_states(tmp_path: Path) -> None:
    """Schema 2 adds the approval states to the counts table of an existing database."""
    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    for statement in MIGRATIONS[1]:
        db.execute(statement)
    db.execute("INSERT INTO tasks (id, prompt, state, source, created_at) VALUES ('t-old', 'p', 'queued', 'cli', 1)")
    db.execute("PRAGMA user_version = 1")
    db.close()
    store = TaskStore(tmp_path / "t.db")
    store.insert(Task(id="t-new", prompt="p", created_at=2.0, state=TaskState.AWAITING_APPROVAL))
    store.commit()
    assert store.stats()["awaiting_approval"] == 1 and store.stats()["queued"] == 1
    assert store.get("t-old").metadata == {} and store.get("t-old").env == {}
    store.close()


#: A store written by the schema-2 code (the release before the daemon's own fields
#: had columns): its tasks carry those fields as metadata keys, and one task has a
#: client's own `chainDepth` and `resumeSession` of the wrong type, which stay.
SCHEMA_2 = Path(__file__).parents[1] / "fixtures" / "tasks-schema2.db"

DAEMON_KEYS = {"_env", "loop", "approvalExpiresAt", "approvedBy", "rejectedBy", "resumeSession", "replyTo",
               "chainDepth"}


def test_a_schema_2_store_moves_the_daemons_keys_into_their_fields(tmp_path: Path) -> None:
    shutil.copy(SCHEMA_2, tmp_path / "t.db")
    store = TaskStore(tmp_path / "t.db")
    tasks = {t.id: t for t in store.all()}
    assert tasks["t-v2done"].chain_depth == 2
    assert tasks["t-v2done"].metadata == {"ruleId": "lint", "trigger": "file:changed", "files": ["a.py"],
                                          "fileCount": 1}
    assert tasks["t-v2env"].env == {"AIWG_FIXTURE_GREETING": "hello ${AIWG_FIXTURE_NAME}"}
    assert tasks["t-v2env"].metadata == {"ticket": "ABC-1"}
    loop = tasks["t-v2loop"]
    assert loop.loop == LoopSpec(until="test -f loop-passes", max_iterations=3, check_timeout_minutes=10.0)
    assert (loop.progress.iteration, loop.progress.spent_usd, loop.progress.last_exit) == (1, 0.25, 1)
    assert loop.metadata == {}
    assert tasks["t-v2gate"].approval_expires_at == parse_iso("2099-01-01T00:00:00.000Z")
    assert tasks["t-v2gate"].chain_depth == 1
    chat = tasks["t-v2chat"]
    assert chat.resume_session == "s-1" and chat.reply_to == {"platform": "telegram", "chat": "100",
                                                                 "where": {"chat_id": 100}, "kind": "chat"}
    assert chat.metadata == {"source": "messaging", "conversation": "c-abc",
                             "requestedBy": {"user": "42", "name": "alice"}}
    assert tasks["t-v2rej"].rejected_by == "cli:alice" and tasks["t-v2appr"].approved_by == "telegram:42 (alice)"
    assert tasks["t-v2own"].metadata == {"chainDepth": "deep", "resumeSession": 7}
    assert tasks["t-v2own"].chain_depth == 0 and tasks["t-v2own"].resume_session is None
    for task in tasks.values():
        assert task.id == "t-v2own" or not DAEMON_KEYS & set(task.metadata), task
    assert store.stats()["total"] == 8 and store.stats()["queued"] == 2
    store.close()
    # The wire still shows them under the names clients know.
    store = TaskStore(tmp_path / "t.db")
    gate = record_json(store.get("t-v2gate"))
    assert gate["metadata"] == {"ruleId": "deploy", "trigger": "schedule:nightly", "chainDepth": 1,
                                "approvalExpiresAt": "2099-01-01T00:00:00.000Z"}
    assert record_json(store.get("t-v2env"))["env"] == ["AIWG_FIXTURE_GREETING"]
    assert record_json(store.get("t-v2loop"))["metadata"]["loop"]["lastCheck"] == {"exitCode": 1,
                                                                                 "output": "not yet"}
    store.close()


def test_the_daemons_fields_are_written_to_their_columns_not_to_metadata(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    store.insert(Task(id="t-1", prompt="p", metadata={"mine": 1}, env={"A": "${B}"},
                      loop=LoopSpec(until="true"), loop_progress=LoopProgress(iteration=2, spent_usd=0.5),
                      approval_expires_at=1e9, approved_by="cli:me", resume_session="s-1",
                      reply_to={"platform": "slack"}, chain_depth=3))
    store.close()
    db = sqlite3.connect(tmp_path / "t.db")
    (metadata,) = db.execute("SELECT metadata FROM tasks").fetchone()
    db.close()
    assert json.loads(metadata) == {"mine": 1}
    again = TaskStore(tmp_path / "t.db").get("t-1")
    assert again.env == {"A": "${B}"} and again.loop == LoopSpec(until="true")
    assert (again.progress.iteration, again.progress.spent_usd, again.chain_depth) == (2, 0.5, 3)
    assert (again.approval_expires_at, again.approved_by, again.resume_session) == (1e9, "cli:me", "s-1")
    assert again.reply_to == {"platform": "slack"}


def test_withdrawing_the_only_write_of_a_batch_fires_its_waiters(tmp_path: Path) -> None:
    """A commit waiter of a batch that the withdrawal leaves empty must not wait
    forever (a start waiting for its running state to be durable, say)."""
    store = TaskStore(tmp_path / "t.db", lambda flush, delay: None)
    task = store.insert(Task(id="t-w", prompt="x"))
    waiting = store.when_durable()
    fired: list[Any] = []
    waiting.addBoth(fired.append)
    assert store.withdraw(task.id)
    assert fired == [None] and store.stats().get("queued", 0) == 0
    store.close()


def test_queued_tasks_are_read_from_memory_when_they_start_even_behind_a_long_backlog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog longer than the recent-tasks cache: each queued task is read again
    when it starts, and that read must not be a query on the reactor; past the
    queued-task cap the oldest fall back to the disk, with the same content."""
    from aiwg.daemon.tasks import store as store_module

    monkeypatch.setattr(store_module, "WAITING_TASKS", 400)
    turns = Turns()
    store = TaskStore(tmp_path / "t.db", turns)
    for i in range(500):
        store.insert(Task(id=f"t-q{i:03d}", prompt=f"queued {i}", state=TaskState.QUEUED))
    turns.run()
    for i in range(store_module.RECENT_TASKS + 50):  # ended tasks written since: the recent cache is theirs
        store.insert(Task(id=f"t-e{i:03d}", prompt="ended", state=TaskState.COMPLETED))
    turns.run()
    queries: list[str] = []
    store._reader.set_trace_callback(queries.append)
    kept = [store.get(f"t-q{i:03d}") for i in range(100, 500)]
    assert queries == [] and [t.prompt for t in kept] == [f"queued {i}" for i in range(100, 500)]
    evicted = store.get("t-q000")  # beyond the cap: read from the disk
    assert len(queries) == 1 and evicted is not None and evicted.prompt == "queued 0"
    store.save(kept[0].moved(TaskState.RUNNING, pid=7))
    turns.run()
    assert store.get("t-q100").state == TaskState.RUNNING  # the latest write, not the cached queued one
    assert "t-q100" not in store._waiting
    store.close()
