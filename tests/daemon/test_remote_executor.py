"""The remote executor's glue on the reactor, with its channel (Redis, Celery and
git) faked and the clock injected: which tasks are sent and when, how a worker's
events become the task's record, a lapsed lease, a broker that goes away.
The real thing, end to end: tests/e2e/test_remote.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from attrs import evolve
from twisted.internet.defer import fail, succeed

from aiwg.core.remote import RemoteSettings, Report
from aiwg.core.tasks import TaskState
from aiwg.core.workspaces import ChangeSize
from aiwg.daemon.executors.remote import LOOK_SECONDS, RemoteExecutor
from tests.fakes.supervisor import make

SETTINGS = RemoteSettings(kind="celery", broker="redis://h/0", backend=None, queue="aiwg", git_remote="/g",
                          max_in_flight=None, connect_timeout=1.0)


class FakeChannel:
    """Answers at once, as the channel's thread would a moment later."""

    def __init__(self, reactor: Any, settings: RemoteSettings, namespace: str, root: Path, environ: Any) -> None:
        self.settings = settings
        self.keys = type("K", (), {"namespace": namespace})()
        self.workers = [{"name": "w1@h", "queue": "aiwg", "concurrency": 2},
                        {"name": "w2@h", "queue": "aiwg", "concurrency": 2}]
        self.broken: str | None = None
        self.published: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.leases: dict[str, bool] = {}
        self.reports: dict[str, Report] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def follow(self, handle: Callable[..., Any], trouble: Callable[..., Any]) -> None:
        self.handle = handle

    def url(self, which: str = "state") -> str:
        return self.settings.broker

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return succeed(function(*args))
        except Exception as exc:
            return fail(exc)

    def look(self) -> dict[str, Any]:
        if self.broken:
            raise ConnectionError(self.broken)
        return {"workers": self.workers, "depth": 0}

    def states(self, runs: list[str]) -> dict[str, Any]:
        return {run: (self.leases.get(run, False), "finished" if run in self.reports else
                      ("running" if run in self.leases else "published"), self.reports.get(run)) for run in runs}

    def send_base(self, task_id: str, base_ref: str) -> str:
        return "b" * 40

    def publish(self, run: str, payload: dict[str, Any]) -> None:
        if self.broken:
            raise ConnectionError(self.broken)
        self.published.append(payload)

    def cancel(self, run: str) -> None:
        self.cancelled.append(run)

    def fetch_branch(self, task_id: str, branch: str, base: str, head: str) -> ChangeSize:
        return ChangeSize(1, 2, 0)

    def forget_refs(self, task_id: str, branch: str | None) -> None:
        pass


def remote(tmp_path: Path) -> tuple[Any, Any, RemoteExecutor, FakeChannel]:
    sup, reactor, topics = make(tmp_path)
    sup.settings = evolve(sup.settings, remotes={"celery": SETTINGS})
    executor = RemoteExecutor(sup, SETTINGS, "ns", channel=FakeChannel)
    sup.executors.remote["celery"] = executor
    executor.start([])
    reactor.advance(0)
    return sup, reactor, executor, executor.channel  # type: ignore[return-value]


def entry(task_id: str, attempt: int, kind: str, **fields: Any) -> tuple[str, dict[bytes, bytes]]:
    out = {b"task": task_id.encode(), b"run": f"{task_id}.{attempt}".encode(), b"kind": kind.encode()}
    out.update({k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()})
    return "1-0", out


def test_as_many_tasks_are_sent_as_the_workers_have_slots(tmp_path: Path) -> None:
    sup, reactor, executor, channel = remote(tmp_path)
    channel.workers = []  # the workers go away while nothing runs
    reactor.advance(LOOK_SECONDS)  # idle: the executor stops looking
    ids = [sup.add(f"task {i}", executor="celery").id for i in range(6)]  # it looks again first
    reactor.advance(LOOK_SECONDS)
    assert channel.published == []
    assert "no worker serves queue 'aiwg'" in (executor.waiting_reason() or "")
    channel.workers = [{"name": "w1@h", "queue": "aiwg", "concurrency": 2},
                       {"name": "w2@h", "queue": "aiwg", "concurrency": 2}]
    reactor.advance(LOOK_SECONDS)  # one look: four slots, four tasks sent in one go
    sup.store.commit()
    reactor.advance(0)
    assert [p["task_id"] for p in channel.published] == ids[:4]
    assert all(sup.store.get(i).state == TaskState.RUNNING for i in ids[:4])
    assert "every worker slot is busy" in (executor.waiting_reason() or "")
    assert channel.published[0]["env"] == {} and channel.published[0]["attempt"] == 1


def test_a_workers_events_become_the_tasks_record(tmp_path: Path) -> None:
    sup, reactor, executor, channel = remote(tmp_path)
    task_id = sup.add("@print:1", executor="celery").id
    reactor.advance(LOOK_SECONDS)
    sup.store.commit()
    reactor.advance(0)
    channel.handle([entry(task_id, 1, "claimed", worker="w1@h"),
                    entry(task_id, 1, "output", fd=1, offset=0, data=b"hello\n"),
                    entry(task_id, 1, "output", fd=1, offset=0, data=b"hello\n"),  # given again: skipped
                    entry(task_id, 2, "output", fd=1, offset=6, data=b"not this run's\n"),
                    entry(task_id, 1, "finished", report=Report(worker="w1@h", exit_code=0, head="c" * 40).to_json())])
    reactor.advance(0)
    task = sup.store.get(task_id)
    assert task.state == TaskState.COMPLETED and task.worker == "w1@h" and task.executor == "celery"
    assert Path(task.output_path).read_bytes() == b"hello\n"
    assert task.workspace.state == "open" and task.workspace.head == "c" * 40 and task.workspace.size.files == 1


def test_a_lapsed_lease_is_a_lost_worker_and_a_retry_when_the_task_has_one(tmp_path: Path) -> None:
    sup, reactor, executor, channel = remote(tmp_path)
    once = sup.add("a", executor="celery").id
    twice = sup.add("b", executor="celery", retries=1).id
    reactor.advance(LOOK_SECONDS)
    sup.store.commit()
    reactor.advance(0)
    channel.handle([entry(once, 1, "claimed", worker="w1@h"), entry(twice, 1, "claimed", worker="w1@h")])
    channel.leases = {f"{once}.1": True, f"{twice}.1": True}
    reactor.advance(LOOK_SECONDS)
    assert sup.store.get(once).state == TaskState.RUNNING
    channel.leases = {}  # w1 is gone
    reactor.advance(LOOK_SECONDS)
    lost = sup.store.get(once)
    assert lost.state == TaskState.FAILED and "worker lost: w1@h" in lost.error
    assert f"{once}.1" in channel.cancelled  # should it come back, it stops
    sup.store.commit()
    reactor.advance(LOOK_SECONDS)
    again = sup.store.get(twice)
    assert again.state == TaskState.RUNNING and again.attempts == 2  # sent again, as a new run
    assert [p["attempt"] for p in channel.published if p["task_id"] == twice] == [1, 2]


def test_an_unreachable_broker_keeps_tasks_queued_and_says_so(tmp_path: Path) -> None:
    sup, reactor, executor, channel = remote(tmp_path)
    channel.broken = "Connection refused"
    reactor.advance(LOOK_SECONDS)
    task_id = sup.add("x", executor="celery").id
    reactor.advance(LOOK_SECONDS)
    assert sup.store.get(task_id).state == TaskState.QUEUED
    assert executor.waiting_reason() == "executor celery: broker redis://h/0 unreachable (Connection refused)"
    assert any("unreachable" in issue for issue in sup.health_issues())
    channel.broken = None
    reactor.advance(LOOK_SECONDS)
    sup.store.commit()
    reactor.advance(0)
    assert sup.store.get(task_id).state == TaskState.RUNNING and sup.health_issues() == []
