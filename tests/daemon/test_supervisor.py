"""The supervisor's timing and state logic, driven by a Clock and a fake process reactor."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from aiwg.core import agents
from aiwg.core.tasks import Change, TaskState
from aiwg.errors import STORE_UNWRITABLE
from aiwg.daemon.tasks import reaper as reaper_module
from aiwg.daemon.tasks.spawning import SessionLeaderProcess
from aiwg.daemon.tasks.reaper import StartTimes, process_start_time
from aiwg.daemon.tasks.supervisor import Supervisor
from tests.fakes.delivery import Delivered
from tests.fakes.supervisor import make

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc and clocks")


def state(supervisor: Supervisor, task_id: str) -> TaskState:
    task = supervisor.store.get(task_id)
    assert task is not None
    return task.state


def test_spawn_uses_setsid_devnull_project_cwd_and_a_clean_env(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    task = supervisor.add("hello; $(x)")
    [process] = reactor.spawned
    assert process.args == [sys.executable, "-p", "--", "hello; $(x)"]
    assert process.executable == sys.executable
    assert process.path == str(tmp_path)
    assert isinstance(process.child_fds[0], int) and process.child_fds[1] == "r" and process.child_fds[2] == "r"
    assert "CLAUDECODE" not in process.env
    assert state(supervisor, task.id) == TaskState.RUNNING
    process.finish(0)
    assert state(supervisor, task.id) == TaskState.COMPLETED
    supervisor.stopService()


def test_a_timeout_due_after_the_agent_exited_does_not_relabel_it(tmp_path: Path) -> None:
    """The daemon was paused (SIGSTOP) past the deadline while the agent exited in
    time: when the reactor runs again the timer is due before the exit is reaped.
    The exit status the kernel already holds wins."""
    exited: set[int] = set()
    supervisor, reactor, _ = make(tmp_path, has_exited=lambda pid: pid in exited)
    task = supervisor.add("quick", timeout_minutes=1)
    [process] = reactor.spawned
    exited.add(process.pid)  # it ended at 1 s; nothing has reaped it yet
    reactor.advance(60)  # the paused reactor wakes with the timer overdue
    assert reactor.signals == []
    process.finish(0)  # SIGCHLD handled next
    record = supervisor.store.get(task.id)
    assert record.state == TaskState.COMPLETED and record.error is None


def test_timeout_terms_then_kills_the_group_after_the_grace(tmp_path: Path) -> None:
    supervisor, reactor, topics = make(tmp_path)
    task = supervisor.add("slow", timeout_minutes=1)
    [process] = reactor.spawned
    reactor.advance(59.9)
    assert reactor.signals == []
    reactor.advance(0.1)
    assert reactor.signals == [(process.pid, signal.SIGTERM)]
    reactor.advance(4.9)
    assert reactor.signals == [(process.pid, signal.SIGTERM)]
    reactor.advance(0.1)
    assert reactor.signals[-1] == (process.pid, signal.SIGKILL)
    process.finish(None, signal.SIGKILL)
    record = supervisor.store.get(task.id)
    assert record.state == TaskState.TIMEOUT and record.error == "timed out after 1 min"
    reactor.advance(0)
    assert f"task:timeout {task.id}" in topics
    supervisor.stopService()


def test_a_task_that_obeys_sigterm_is_not_killed(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    task = supervisor.add("cancel me")
    [process] = reactor.spawned
    assert supervisor.cancel(task.id).done is True
    process.finish(None, signal.SIGTERM)
    reactor.advance(10)
    assert [s for _, s in reactor.signals] == [signal.SIGTERM]
    assert state(supervisor, task.id) == TaskState.CANCELLED
    supervisor.stopService()


def test_slots_free_on_exit_and_the_bound_holds(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path, max_parallel=2)
    ids = [supervisor.add(f"t{i}").id for i in range(5)]
    assert len(reactor.running()) == 2
    reactor.spawned[0].exit(0)  # slot frees on exit, before the output is closed
    reactor.advance(0)
    assert len(reactor.running()) == 2
    reactor.spawned[0].end()
    for _ in range(10):
        for process in reactor.running():
            process.finish(0)
        reactor.advance(0)
        assert len(reactor.running()) <= 2
    assert all(state(supervisor, i) == TaskState.COMPLETED for i in ids)
    supervisor.stopService()


def test_priority_then_fifo(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path, max_parallel=1)
    supervisor.add("first")
    for name, priority in [("b", 0), ("c", 5), ("d", 0), ("e", 5), ("f", -1)]:
        supervisor.add(name, priority=priority)
    order = []
    while reactor.running():
        process = reactor.running()[0]
        order.append(process.args[-1])
        process.finish(0)
        reactor.advance(0)
    assert order == ["first", "c", "e", "b", "d", "f"]
    supervisor.stopService()


def test_orphans_left_in_the_group_are_terminated_when_the_agent_exits(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    supervisor.add("leaves a child")
    [process] = reactor.spawned
    process.exit(0, group_survives=True)  # a grandchild still holds the group
    assert reactor.signals == [(process.pid, signal.SIGTERM)]
    reactor.advance(5)
    assert reactor.signals[-1] == (process.pid, signal.SIGKILL)
    reactor.alive_groups.discard(process.pid)
    process.end()
    supervisor.stopService()


def test_output_is_capped_and_the_tail_kept(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path, output_max_bytes=100)
    task = supervisor.add("chatty")
    [process] = reactor.spawned
    for i in range(50):
        process.output(f"line {i:03d}\n".encode())
    process.finish(0)
    record = supervisor.store.get(task.id)
    data = Path(record.output_path).read_bytes()
    assert data.startswith(b"line 000\n") and data.endswith(b"[aiwg: output truncated at 100 bytes]\n")
    assert record.output_bytes == 100
    assert record.output_tail.endswith("line 049\n")
    supervisor.stopService()


def test_stop_terms_running_tasks_and_fires_when_they_have_ended(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    task = supervisor.add("busy")
    queued = [supervisor.add("q1"), supervisor.add("q2")]
    done = supervisor.stopService()
    [first, second] = reactor.spawned[:2]
    assert not done.called
    assert {s for _, s in reactor.signals} == {signal.SIGTERM}
    reactor.advance(15)
    assert (first.pid, signal.SIGKILL) in reactor.signals
    first.finish(None, signal.SIGKILL)
    second.finish(None, signal.SIGTERM)
    assert done.called
    assert supervisor.store.get(task.id).error == "interrupted: daemon stopped while the task was running"
    assert len(reactor.spawned) == 2  # nothing new started while stopping
    assert state(supervisor, queued[1].id) == TaskState.QUEUED
    with pytest.raises(Exception, match="shutting down"):
        supervisor.add("too late")


def test_claude_json_result_is_parsed(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path, agent=agents.AgentSettings(
        command=(sys.executable, "-p", "{prompt}"), output="claude-json"))
    task = supervisor.add("q")
    [process] = reactor.spawned
    process.output(b'{"type":"result","subtype":"success","is_error":false,"result":"42",'
                   b'"session_id":"s-1","total_cost_usd":0.5}\n')
    process.finish(0)
    record = supervisor.store.get(task.id)
    assert (record.result, record.session_id, record.cost_usd) == ("42", "s-1", 0.5)
    supervisor.stopService()


def test_an_outcome_stands_once_the_agent_has_exited(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    done = supervisor.add("exits fine", timeout_minutes=1)
    [process] = reactor.spawned
    process.exit(0)
    assert supervisor.cancel(done.id).done is False  # finishing: nothing to cancel
    reactor.advance(120)  # its timeout would have fired by now
    process.end()
    assert state(supervisor, done.id) == TaskState.COMPLETED


def test_a_failed_exit_is_not_retried_by_a_stop_that_came_after_it(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    task = supervisor.add("fails", retries=1)
    [process] = reactor.spawned
    process.exit(3)
    supervisor.stopService()
    process.end()
    record = supervisor.store.get(task.id)
    assert record.state == TaskState.FAILED and record.error.startswith("agent exited with code 3")


def test_secrets_split_across_reads_are_still_redacted(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path, environ={"TOKEN": "s3cr3t-value-123"}, agent=agents.AgentSettings(
        command=(sys.executable, "-p", "{prompt}"), env={"API": "${TOKEN}"}, output="text"))
    seen: list[str] = []
    supervisor.bus.subscribe(["task:output"], lambda e: seen.append(e.payload["chunk"]))
    task = supervisor.add("leak")
    [process] = reactor.spawned
    assert process.env["API"] == "s3cr3t-value-123"
    process.output(b"key=s3cr3t-va")
    process.output("lue-123 café\n".encode())
    process.finish(0)
    reactor.advance(0)
    record = supervisor.store.get(task.id)
    text = Path(record.output_path).read_text()
    assert text == "key=[redacted] café\n"
    assert "s3cr3t" not in record.output_tail and "s3cr3t" not in "".join(seen)
    assert "".join(seen) == text
    supervisor.stopService()


def test_a_failed_commit_puts_tasks_back_in_the_queue_and_retries(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    store = supervisor.store
    real_flush = store.flush
    failures = [1]

    def flaky_flush() -> None:
        if failures:
            failures.pop()
            raise OSError("disk I/O error")
        real_flush()

    store.flush = flaky_flush  # type: ignore[method-assign]
    task = supervisor.add("try me")
    assert reactor.spawned == []
    assert state(supervisor, task.id) == TaskState.QUEUED and task.id in supervisor.queue
    reactor.advance(1)
    [process] = reactor.spawned
    assert state(supervisor, task.id) == TaskState.RUNNING
    process.finish(0)
    assert state(supervisor, task.id) == TaskState.COMPLETED
    supervisor.stopService()


def test_pipes_held_by_an_escaped_process_are_closed_after_the_grace(tmp_path: Path) -> None:
    supervisor, reactor, _ = make(tmp_path)
    task = supervisor.add("daemonizes badly")
    [process] = reactor.spawned
    closed: list[int] = []
    process.closeChildFD = lambda fd: closed.append(fd)  # type: ignore[attr-defined]
    process.exit(0)
    reactor.advance(5 + 1)
    assert closed == [1, 2]
    process.end()
    assert state(supervisor, task.id) == TaskState.COMPLETED
    supervisor.stopService()


def on_disk(tmp_path: Path, task_id: str) -> str | None:
    db = sqlite3.connect(tmp_path / "tasks.db")
    try:
        row = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def test_an_agent_is_spawned_only_once_its_running_state_is_on_disk(tmp_path: Path) -> None:
    delivered = Delivered()
    seen_on_disk: list[tuple[str, str | None]] = []

    def recording(protocol: Any) -> None:
        task_id = protocol.process.task.id
        seen_on_disk.append((protocol.process.task.prompt, on_disk(tmp_path, task_id)))

    supervisor, reactor, _ = make(tmp_path, delivered, max_parallel=2, watch_spawns=recording)
    first, second, third = (supervisor.add(p) for p in ("one", "two", "three"))
    assert reactor.spawned == []  # the commit is on its way
    assert [state(supervisor, t.id) for t in (first, second, third)] == [
        TaskState.RUNNING, TaskState.RUNNING, TaskState.QUEUED]  # starting tasks hold their slots
    assert supervisor.summary()["running"] == 2
    delivered.run()
    assert len(reactor.spawned) == 1

    def deliver_until(spawned: int) -> None:
        for _ in range(10):
            if len(reactor.spawned) == spawned:
                return
            delivered.run()
        raise AssertionError(f"{len(reactor.spawned)} spawned, not {spawned}")

    deliver_until(2)
    reactor.spawned[0].finish(0)
    reactor.advance(0)
    assert state(supervisor, third.id) == TaskState.RUNNING and len(reactor.spawned) == 2
    deliver_until(3)
    assert seen_on_disk == [("one", "running"), ("two", "running"), ("three", "running")]
    for process in reactor.running():
        process.finish(0)
    supervisor.stopService()
    supervisor.store.close()


def test_a_task_cancelled_while_it_is_being_recorded_never_runs(tmp_path: Path) -> None:
    delivered = Delivered()
    supervisor, reactor, topics = make(tmp_path, delivered)
    task = supervisor.add("never")
    assert supervisor.cancel(task.id) == Change.made(supervisor.store.get(task.id))
    delivered.run()
    assert reactor.spawned == []
    record = supervisor.store.get(task.id)
    assert record.state == TaskState.CANCELLED and record.error == "cancelled before it started"
    reactor.advance(0)
    assert f"task:cancelled {task.id}" in topics
    supervisor.stopService()
    supervisor.store.close()


def test_stop_waits_for_tasks_being_recorded_and_does_not_start_them(tmp_path: Path) -> None:
    delivered = Delivered()
    supervisor, reactor, _ = make(tmp_path, delivered)
    task = supervisor.add("late")
    done = supervisor.stopService()
    assert not done.called
    delivered.run()
    assert done.called and reactor.spawned == []
    assert state(supervisor, task.id) == TaskState.QUEUED  # it never ran
    supervisor.store.close()
    assert on_disk(tmp_path, task.id) == "queued"


@linux_only
def test_start_times_come_from_the_clock_once_it_agrees_with_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    monkeypatch.setattr(reaper_module, "process_start_time", lambda pid: reads.append(pid) or "1234")
    times = StartTimes()
    assert times.of(1, 1234, 1234) == "1234" and times.trusted is True  # checked once against /proc
    assert times.of(2, 77, 77) == "77" and reads == [1]  # then the clock alone
    assert times.of(3, 77, 78) == "1234" and reads == [1, 3]  # a spawn across a tick boundary
    doubtful = StartTimes()
    assert doubtful.of(4, 5, 5) == "1234" and doubtful.trusted is False
    assert doubtful.of(5, 1234, 1234) == "1234" and reads[-1] == 5  # /proc from then on


@linux_only
def test_the_boot_clock_tells_the_start_time_proc_gives() -> None:
    times = StartTimes()
    compared = 0
    for _ in range(20):
        before = times.now()
        pid = os.posix_spawn("/bin/true", ["true"], {})
        after = times.now()
        try:
            if before == after:
                assert process_start_time(pid) == str(before)
                compared += 1
        finally:
            os.waitpid(pid, 0)
    assert compared > 0


_REPORT = (
    "import json, os, sys\n"
    "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
    "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
    "print(json.dumps({'pid': os.getpid(), 'sid': os.getsid(0), 'pgid': os.getpgid(0), 'fds': fds,\n"
    "                  'ignored': int(status['SigIgn'], 16)}))\n"
)


@linux_only
@pytest.mark.parametrize("spawned,cloexec_range", [(True, True), (True, False), (False, True)],
                         ids=["posix_spawn", "posix_spawn-closing-each-fd", "fork"])
@pytest_twisted.ensureDeferred
async def test_the_agent_leads_its_session_with_fds_0_to_2_and_default_signals(
    tmp_path: Path, spawned: bool, cloexec_range: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import ProcessProtocol

    from aiwg.daemon.tasks import spawning

    unusable = spawning.CloexecFrom()
    unusable._checked, unusable.problem = True, "close_range(CLOSE_RANGE_CLOEXEC) unusable: (test)"
    monkeypatch.setattr(spawning, "CLOEXEC_FROM", spawning.CLOEXEC_FROM if cloexec_range else unusable)
    assert spawning.CLOEXEC_FROM.works() is cloexec_range  # this machine's Linux has close_range

    class Collect(ProcessProtocol):
        def __init__(self) -> None:
            self.out = b""
            self.ended: Deferred = Deferred()

        def childDataReceived(self, fd: int, data: bytes) -> None:
            self.out += data

        def processEnded(self, reason: Any) -> None:
            self.ended.callback(None)

    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)  # one that close-on-exec would not stop
    devnull = os.open(os.devnull, os.O_RDONLY)
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        protocol = Collect()
        # Twisted spawns when the child's directory is ours, and forks otherwise.
        path = os.getcwd() if spawned else str(tmp_path)
        SessionLeaderProcess(reactor, sys.executable, [sys.executable, "-c", _REPORT], {}, path,
                             protocol, None, None, {0: devnull, 1: "r", 2: "r"})
        await protocol.ended
    finally:
        signal.signal(signal.SIGUSR2, previous)
        os.close(leaked)
        os.close(devnull)
    report = json.loads(protocol.out)
    assert report["sid"] == report["pid"] == report["pgid"]
    assert report["fds"] == [0, 1, 2, 3]  # 3: the listing itself
    assert not report["ignored"] & (1 << (signal.SIGUSR2 - 1))


@linux_only
def test_cloexec_from_marks_descriptors_from_the_number_up_and_no_lower() -> None:
    from aiwg.daemon.tasks.spawning import CloexecFrom

    mark = CloexecFrom()
    assert mark.works(), mark.problem
    low, high = sorted(os.pipe())
    try:
        os.set_inheritable(low, True)
        os.set_inheritable(high, True)
        mark(high)
        assert os.get_inheritable(low) and not os.get_inheritable(high)
    finally:
        os.close(low)
        os.close(high)


def test_cloexec_from_falls_back_when_close_range_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old kernel or C library: the probe says why, and spawns close each descriptor."""
    import ctypes

    from aiwg.daemon.tasks.spawning import CloexecFrom

    class NoCloseRange:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(f"undefined symbol: {name}")

    monkeypatch.setattr(ctypes, "CDLL", NoCloseRange)
    mark = CloexecFrom()
    assert not mark.works()
    assert mark.problem == "close_range(CLOSE_RANGE_CLOEXEC) unusable: undefined symbol: close_range"


def test_has_exited_sees_an_unreaped_child_without_reaping_it() -> None:
    import subprocess

    from aiwg.daemon.tasks.spawning import has_exited

    child = subprocess.Popen(["sleep", "0.2"])
    assert not has_exited(child.pid)
    deadline = 5.0
    while not has_exited(child.pid) and deadline > 0:
        deadline -= 0.01
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # blocks until it has ended, reaps nothing
    assert has_exited(child.pid)
    assert child.wait(timeout=5) == 0  # still ours to reap
    assert not has_exited(child.pid)


def test_a_flood_of_stdout_keeps_its_start_and_its_end_and_the_json_result(tmp_path: Path) -> None:
    """Memory stays bounded however much an agent prints; claude's JSON result,
    its last line, is still read."""
    from aiwg.daemon.tasks.process import STDOUT_HEAD_BYTES, STDOUT_TAIL_BYTES

    supervisor, reactor, _ = make(tmp_path, output_max_bytes=1024)
    task = supervisor.add("flood")
    [process] = reactor.spawned
    run = supervisor.runs[task.id]
    chunk = b"y" * 65536
    for _ in range(200):  # 12.5 MiB
        process.protocol.childDataReceived(1, chunk)
    result = b'\n{"type": "result", "result": "the answer", "session_id": "s-1", "total_cost_usd": 0.5}\n'
    process.protocol.childDataReceived(1, result)
    assert len(run.stdout_head) == STDOUT_HEAD_BYTES and len(run.stdout_tail) <= 2 * STDOUT_TAIL_BYTES
    text = run.stdout_text()
    assert len(text) < STDOUT_HEAD_BYTES + STDOUT_TAIL_BYTES + 200 and "bytes, in the task's output file" in text
    process.finish(0)
    record = supervisor.store.get(task.id)
    assert record.state == TaskState.COMPLETED and record.result == "the answer" and record.session_id == "s-1"


def test_submit_fires_once_durable_and_withdraws_what_cannot_be_written(tmp_path: Path) -> None:
    supervisor, reactor, topics = make(tmp_path, max_parallel=1)
    started = supervisor.submit("takes the slot")
    assert started.called and on_disk(tmp_path, started.result.id) is not None  # its start's commit made it durable
    submitted = supervisor.submit("fits")
    assert not submitted.called  # queued, in memory; its commit comes at the end of the turn
    reactor.advance(0)
    task = submitted.result
    assert on_disk(tmp_path, task.id) is not None
    # The disk is full: the database may not grow by one page.
    db = supervisor.store._db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    failed: list[Any] = []
    supervisor.submit("x" * 50_000).addErrback(failed.append)
    reactor.advance(0)
    [failure] = failed
    assert failure.value.code == STORE_UNWRITABLE and "disk is full" in failure.value.message
    withdrawn = [t for t in topics if t.startswith("task:withdrawn")]
    assert len(withdrawn) == 1 and supervisor.store.get(withdrawn[0].split()[1]) is None
    assert supervisor.stats()["queued"] == 1  # "fits", behind the first; the withdrawn one is not counted
    db.execute("PRAGMA max_page_count = 1073741823")
    supervisor.stopService()
