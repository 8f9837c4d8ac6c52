"""AgentProcess on its own, with no supervisor: it spawns through what it is given,
records its output, clears out its group, and reports through `exited` and
`ended`. The clock and the processes are fakes driven by the test."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from aiwg.core.tasks import Task
from aiwg.daemon.tasks.process import AgentProcess, Exit
from tests.fakes.process_reactor import FakeProcessReactor


class Killer:
    """The reaper's part, over the fake reactor's process groups."""

    def __init__(self, reactor: FakeProcessReactor) -> None:
        self.killpg = reactor.killpg
        self.reactor = reactor
        self.marked: list[str] = []
        self.cgroups: list[str] = []

    def group_alive(self, pgid: int) -> bool:
        return pgid in self.reactor.alive_groups

    def kill_marked(self, task_id: str) -> bool:
        self.marked.append(task_id)
        return False

    def kill_cgroup(self, task_id: str) -> None:
        self.cgroups.append(task_id)


def started(tmp_path: Path, secrets: list[str] = [], limit: int = 1024, **options: Any) -> tuple[
        AgentProcess, FakeProcessReactor, Killer, list[tuple[str, dict[str, Any]]]]:
    reactor = FakeProcessReactor()
    killer = Killer(reactor)
    published: list[tuple[str, dict[str, Any]]] = []
    task = Task(id="t-1", prompt="p", output_path=str(tmp_path / "t-1.log"))
    process = AgentProcess(task, clock=reactor, killer=killer, publish=lambda t, p: published.append((t, p)),
                           secrets=secrets, output_max_bytes=limit, kill_grace=2.0, shutdown_grace=5.0, **options)
    pid = process.spawn(reactor.spawnProcess, "/bin/agent", ["agent", "-p"], {"A": "1"}, str(tmp_path),
                        {0: "w", 1: "r", 2: "r"})
    assert pid == reactor.spawned[0].pid == process.pgid
    return process, reactor, killer, published


def outcomes(process: AgentProcess) -> list[tuple[str, Exit]]:
    seen: list[tuple[str, Exit]] = []
    process.exited.addCallback(lambda e: seen.append(("exited", e)))
    process.ended.addCallback(lambda e: seen.append(("ended", e)))
    return seen


def test_exited_fires_when_the_process_is_gone_and_ended_once_its_output_is_in(tmp_path: Path) -> None:
    process, reactor, _, published = started(tmp_path, secrets=["hunter2-secret"])
    seen = outcomes(process)
    child = reactor.spawned[0]
    child.output(b"the password is hunter2-")
    child.output(b"secret, ok\n")  # split across two reads: still caught
    child.exit(3)
    assert seen == [("exited", Exit(3, None, None))]
    child.output(b"a last word from a grandchild\n")
    child.end()
    assert seen == [("exited", Exit(3, None, None)), ("ended", Exit(3, None, None))]
    text = (tmp_path / "t-1.log").read_text()
    assert "hunter2-secret" not in text and "[redacted], ok" in text and "grandchild" in text
    assert process.end("text").output_tail == text
    assert {t for t, _ in published} == {"task:output"}
    assert "".join(p["chunk"] for _, p in published) == text


def test_stop_terms_the_group_then_kills_it_and_its_cgroup_and_keeps_the_reason(tmp_path: Path) -> None:
    process, reactor, killer, _ = started(tmp_path)
    seen = outcomes(process)
    pid = reactor.spawned[0].pid
    process.stop("cancel", 2.0)
    assert reactor.signals == [(pid, signal.SIGTERM)]
    reactor.advance(2.0)
    assert reactor.signals[-1] == (pid, signal.SIGKILL) and killer.cgroups == ["t-1"]
    reactor.spawned[0].finish(None, signal.SIGKILL)
    assert seen[-1] == ("ended", Exit(None, signal.SIGKILL, "cancel"))


def test_a_stop_after_the_exit_leaves_its_outcome_alone(tmp_path: Path) -> None:
    process, reactor, _, _ = started(tmp_path)
    seen = outcomes(process)
    reactor.spawned[0].exit(0, group_survives=True)
    process.stop("shutdown", 5.0)
    reactor.spawned[0].end()
    assert seen[-1] == ("ended", Exit(0, None, None))


def test_what_the_agent_left_in_its_group_is_cleared_and_stuck_pipes_are_closed(tmp_path: Path) -> None:
    process, reactor, killer, _ = started(tmp_path)
    child = reactor.spawned[0]
    closed: list[int] = []
    child.closeChildFD = closed.append  # type: ignore[attr-defined]
    child.exit(0, group_survives=True)  # a grandchild in the group holds the pipes
    assert reactor.signals == [(child.pid, signal.SIGTERM)]
    reactor.advance(2.0)  # the kill grace
    assert reactor.signals[-1] == (child.pid, signal.SIGKILL)
    assert not process.ended.called
    reactor.advance(1.0)  # and one more second: the pipes are closed by force
    assert killer.marked and sorted(closed) == [1, 2]
    assert killer.cgroups == []  # an exit of its own: the task's cgroup is the task's end's to clear


def test_the_deadline_calls_back_unless_the_process_exits_first(tmp_path: Path) -> None:
    process, reactor, _, _ = started(tmp_path)
    due: list[AgentProcess] = []
    process.deadline(60, due.append)
    reactor.advance(59)
    assert due == []
    reactor.advance(1)
    assert due == [process]

    (tmp_path / "other").mkdir()
    other, reactor2, _, _ = started(tmp_path / "other")
    late: list[AgentProcess] = []
    other.deadline(60, late.append)
    reactor2.spawned[0].finish(0)
    reactor2.advance(120)
    assert late == [] and reactor2.getDelayedCalls() == []


def test_the_output_file_is_capped_and_a_loop_phase_appends(tmp_path: Path) -> None:
    process, reactor, _, published = started(tmp_path, limit=10)
    reactor.spawned[0].output(b"0123456789abcdef")
    reactor.spawned[0].finish(0)
    assert (tmp_path / "t-1.log").read_bytes() == b"0123456789\n[aiwg: output truncated at 10 bytes]\n"
    assert published[0][1]["bytes"] == 16  # the stream has all of it

    (tmp_path / "t-1.log").write_bytes(b"before\n")
    phase, reactor, _, published = started(tmp_path, append=True, offset=7)
    reactor.spawned[0].output(b"after\n")
    reactor.spawned[0].finish(0)
    assert (tmp_path / "t-1.log").read_bytes() == b"before\nafter\n"
    assert published[0][1]["offset"] == 7
