"""The loop runner on an injected clock: the agent and the check as fake processes,
the iteration timeout, the check timeout and the whole loop's timeout firing at
their minute, the budget, the slot a loop holds, and the crash limit of the
reconcile step."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.defer import succeed

from aiwg.core.loops import LoopSpec
from aiwg.core.tasks import TaskState
from aiwg.daemon.tasks.commands import CommandResult
from aiwg.daemon.tasks.recovery import recover_running
from tests.fakes.supervisor import make


class NoGit:
    """The project is not a git repository: every snapshot is None, at once."""

    def run(self, argv: list[str], **_: Any) -> Any:
        return succeed(CommandResult(exit_code=128, output="not a git repository", duration=0.0))

    def stop(self) -> list[Any]:
        return []

    def pids(self) -> set[int]:
        return set()


def loop_supervisor(tmp_path: Path, **overrides: Any) -> tuple[Any, Any, list[str]]:
    return make(tmp_path, commands=NoGit(), **overrides)


def result_json(cost: float) -> bytes:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok",
                       "session_id": "s", "total_cost_usd": cost}).encode()


def test_each_timeout_fires_at_its_minute(tmp_path: Path) -> None:
    supervisor, reactor, topics = loop_supervisor(tmp_path)
    spec = LoopSpec(until="make check", max_iterations=10, iteration_timeout_minutes=2, check_timeout_minutes=1)
    task = supervisor.add("fix", loop=spec, timeout_minutes=4)
    [agent] = reactor.spawned
    reactor.advance(119)
    assert reactor.signals == []
    reactor.advance(1)  # the iteration's 2 minutes: the agent's group gets SIGTERM
    assert reactor.signals == [(agent.pid, signal.SIGTERM)]
    agent.finish(None, signal.SIGTERM)
    reactor.advance(0)
    check = reactor.spawned[1]
    assert check.args[1:] == ["-c", "make check"] and check.path == str(tmp_path)
    assert check.env["AIWG_TASK_ID"] == task.id
    reactor.advance(60)  # the check's minute
    assert reactor.signals[-1] == (check.pid, signal.SIGTERM)
    check.finish(None, signal.SIGTERM)
    reactor.advance(0)
    [record] = supervisor.loops.records.read_all(task.id)
    assert record["agent"]["error"] == "the agent timed out after 2 min"
    assert record["check"]["timedOut"] is True and record["outcome"] == "continue"
    assert f"task:iteration {task.id}" in topics
    second = reactor.spawned[2]
    assert "did not finish" in second.args[-1]
    reactor.advance(59.9)
    assert reactor.signals[-1] == (check.pid, signal.SIGTERM)
    reactor.advance(0.1)  # 4 minutes in all since the start: the loop's own timeout
    assert reactor.signals[-1] == (second.pid, signal.SIGTERM)
    second.finish(None, signal.SIGTERM)
    reactor.advance(0)
    final = supervisor.store.get(task.id)
    assert final.state == TaskState.TIMEOUT
    assert final.error == "the loop timed out after 4 min, in iteration 2"
    assert supervisor._active_count() == 0
    supervisor.stopService()


def test_a_loop_holds_its_slot_from_first_iteration_to_last(tmp_path: Path) -> None:
    supervisor, reactor, _ = loop_supervisor(tmp_path, max_parallel=1)
    looping = supervisor.add("fix", loop=LoopSpec(until="make check", max_iterations=2))
    waiting = supervisor.add("other")
    [agent] = reactor.spawned
    agent.output(result_json(0.5))
    agent.finish(0)
    reactor.advance(1)
    assert len(reactor.spawned) == 2 and reactor.spawned[1].args[1] == "-c"  # the check, not the other task
    assert supervisor.store.get(waiting.id).state == TaskState.QUEUED
    reactor.spawned[1].finish(0)  # the check passes
    reactor.advance(0)
    final = supervisor.store.get(looping.id)
    assert final.state == TaskState.COMPLETED and final.cost_usd == 0.5
    assert reactor.spawned[2].args[-1] == "other"  # now the slot is free
    supervisor.stopService()


def test_the_budget_counts_an_interrupted_iteration_too(tmp_path: Path) -> None:
    supervisor, reactor, _ = loop_supervisor(tmp_path)
    task = supervisor.add("fix", loop=LoopSpec(until="false", max_iterations=5, budget_usd=1.0))
    agent = reactor.spawned[0]
    agent.output(result_json(0.75))
    agent.finish(0)
    reactor.advance(0)
    assert supervisor.cancel(task.id).done is True  # during the check
    reactor.spawned[1].finish(None, signal.SIGTERM)
    reactor.advance(0)
    final = supervisor.store.get(task.id)
    assert final.state == TaskState.CANCELLED and final.cost_usd == 0.75
    assert final.progress.spent_usd == 0.75
    supervisor.stopService()


def test_a_loop_the_daemon_keeps_dying_in_is_not_resumed_forever(tmp_path: Path) -> None:
    supervisor, reactor, _ = loop_supervisor(tmp_path)
    task = supervisor.add("fix", loop=LoopSpec(until="false", max_iterations=5))
    store = supervisor.store
    for crashes in range(4):  # the daemon "dies" with the loop running, and starts again
        running = store.get(task.id)
        progress = evolve(running.progress, crashes=crashes)  # as the last start left it
        store.save(evolve(running, state=TaskState.RUNNING, loop_progress=progress, pgid=None, pid=None))
        supervisor.runs.clear()
        supervisor.loops.active.clear()
        supervisor.queue.remove(task.id)
        recover_running(store, supervisor.reaper, supervisor.bus.publish, "text", reactor.seconds())
        after = store.get(task.id)
        if crashes < 3:
            assert after.state == TaskState.QUEUED and after.progress.crashes == crashes + 1
    assert after.state == TaskState.FAILED
    assert after.error.startswith("interrupted: the daemon died 4 times while this loop ran")
