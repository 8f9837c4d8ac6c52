"""The root service: ordered start, rollback of a failed start, staged stop, check-then-apply reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from aiwg.configfile import load_config
from aiwg.daemon.bus import EventBus
from aiwg.daemon.root import DaemonService
from aiwg.errors import CONFIG_INVALID, RpcError
from aiwg.paths import ProjectPaths


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


class Recorder(Service):
    def __init__(self, name: str, log: list[str], fail_on: str = "") -> None:
        self.name = name
        self._log = log
        self._fail_on = fail_on
        self.stop_deferred: Deferred | None = None
        self.applied: list[Any] = []

    def privilegedStartService(self) -> None:
        self._log.append(f"privileged {self.name}")
        if self._fail_on == "privileged":
            raise RuntimeError(f"{self.name} cannot start")

    def startService(self) -> None:
        super().startService()
        self._log.append(f"start {self.name}")
        if self._fail_on == "start":
            raise RuntimeError(f"{self.name} cannot start")

    def abort_start(self) -> None:
        self._log.append(f"abort {self.name}")

    def stopService(self) -> Any:
        super().stopService()
        self._log.append(f"stop {self.name}")
        if self.stop_deferred is not None:
            return self.stop_deferred
        if self._fail_on == "stop":
            raise RuntimeError("stop failed")
        return None

    def apply_config(self, config: Any) -> None:
        if self._fail_on == "apply":
            raise RuntimeError(f"{self.name} choked on it")
        self.applied.append(config)


def make_root(tmp_path: Path, *children: Recorder) -> tuple[DaemonService, FakeReactor]:
    reactor = FakeReactor()
    paths = ProjectPaths(tmp_path)
    root = DaemonService(
        reactor=reactor, paths=paths, config=load_config(paths), explicit_config=None,
        bus=EventBus(reactor=reactor), socket_path=paths.default_socket,
    )
    for child in children:
        child.setServiceParent(root)
    return root, reactor


def test_children_start_in_order_and_stop_one_at_a_time_in_reverse(tmp_path: Path) -> None:
    log: list[str] = []
    a, b, c = Recorder("a", log), Recorder("b", log), Recorder("c", log)
    root, _ = make_root(tmp_path, a, b, c)
    root.privilegedStartService()
    root.startService()
    assert log == ["privileged a", "privileged b", "privileged c", "start a", "start b", "start c"]
    log.clear()
    c.stop_deferred = Deferred()
    done = root.stopService()
    assert log == ["stop c"]  # b waits until c has really finished
    c.stop_deferred.callback(None)
    assert log == ["stop c", "stop b", "stop a"]
    assert done.called
    assert root.phase == "stopped"


def test_a_failing_child_stop_is_logged_and_the_others_still_stop(tmp_path: Path) -> None:
    log: list[str] = []
    root, _ = make_root(tmp_path, Recorder("a", log), Recorder("b", log, fail_on="stop"))
    root.privilegedStartService()
    root.startService()
    log.clear()
    d = root.stopService()
    assert log == ["stop b", "stop a"] and d.called
    assert "stopping b failed" in (tmp_path / ".aiwg/daemon/daemon.log").read_text()


@pytest.mark.parametrize("phase", ["privileged", "start"])
def test_failed_start_undoes_the_started_children(tmp_path: Path, phase: str) -> None:
    log: list[str] = []
    root, _ = make_root(tmp_path, Recorder("lock", log), Recorder("ipc", log, fail_on=phase), Recorder("late", log))
    with pytest.raises(RuntimeError, match="ipc cannot start"):
        root.privilegedStartService()
        root.startService()
    aborted = [entry for entry in log if entry.startswith("abort")]
    if phase == "privileged":  # only lock got as far as binding/locking
        assert aborted == ["abort lock"]
    else:  # all three did their privileged work; undo it in reverse
        assert aborted == ["abort late", "abort ipc", "abort lock"]
    assert "late" not in " ".join(e for e in log if e.startswith("start"))
    assert root.phase == "failed"
    assert "start failed: ipc cannot start" in (tmp_path / ".aiwg/daemon/daemon.log").read_text()


def test_reload_applies_a_valid_config_to_every_child(tmp_path: Path) -> None:
    log: list[str] = []
    a, b = Recorder("a", log), Recorder("b", log)
    root, reactor = make_root(tmp_path, a, b)
    root.privilegedStartService()
    root.startService()
    (tmp_path / ".aiwg" / "daemon.json").write_text(json.dumps({"daemon": {"max_parallel_actions": 7}}))
    result = root.reload()
    assert result["reloaded"] is True and result["changed"] == ["daemon.max_parallel_actions"]
    assert a.applied[-1].daemon.max_parallel_actions == 7 and b.applied[-1] is a.applied[-1]
    assert root.config.daemon.max_parallel_actions == 7
    reactor.advance(0)
    assert [e.topic for e in root.bus.history][-1] == "daemon:reloaded"
    root.stopService()


def test_reload_refuses_an_invalid_file_and_keeps_the_old_config(tmp_path: Path) -> None:
    log: list[str] = []
    a = Recorder("a", log)
    root, _ = make_root(tmp_path, a)
    root.privilegedStartService()
    root.startService()
    before = root.config
    (tmp_path / ".aiwg" / "daemon.json").write_text('{"daemon": {"max_parallel_actions": "three"}}')
    with pytest.raises(RpcError) as caught:
        root.reload()
    assert caught.value.code == CONFIG_INVALID
    assert caught.value.data == {"problems": ["daemon.max_parallel_actions: must be an integer ≥ 1 and ≤ 256, got 'three'"]}
    assert root.config is before and a.applied == []
    root.stopService()


def test_an_invalid_configuration_is_refused_before_any_child_applies_it(tmp_path: Path) -> None:
    log: list[str] = []
    a, b = Recorder("a", log), Recorder("b", log)
    root, _ = make_root(tmp_path, a, b)
    root.privilegedStartService()
    root.startService()
    before = root.config
    (tmp_path / ".aiwg" / "daemon.json").write_text(json.dumps({"daemon": {"max_parallel_actions": 0}}))
    with pytest.raises(RpcError, match="max_parallel_actions"):
        root.reload()
    assert a.applied == [] and b.applied == [] and root.config is before
    root.stopService()


def test_a_child_that_fails_to_apply_is_named_and_nothing_changes(tmp_path: Path) -> None:
    """All or nothing: those that applied go back, and the running configuration
    and its hash stay in force."""
    log: list[str] = []
    a, b, c = Recorder("a", log), Recorder("b", log, fail_on="apply"), Recorder("c", log)
    root, _ = make_root(tmp_path, a, b, c)
    root.privilegedStartService()
    root.startService()
    before = root.config
    (tmp_path / ".aiwg" / "daemon.json").write_text(json.dumps({"daemon": {"max_parallel_actions": 7}}))
    result = root.reload()
    assert result["reloaded"] is False and result["errors"] == ["b: b choked on it"]
    assert result["config_hash"] == before.digest and root.config is before
    assert root.status()["config"]["hash"] == before.digest and root.reloads == 0
    assert [cfg.daemon.max_parallel_actions for cfg in a.applied] == [7, before.daemon.max_parallel_actions]
    assert [cfg.daemon.max_parallel_actions for cfg in c.applied] == [7, before.daemon.max_parallel_actions]
    assert b.applied == []
    root.stopService()


def test_status_and_state_records(tmp_path: Path) -> None:
    root, reactor = make_root(tmp_path)
    reactor.advance(1000)
    root.privilegedStartService()
    root.startService()
    reactor.advance(65.7)
    status = root.status()
    assert status["uptime_seconds"] == 65
    assert status["health"] == "healthy" and status["health_issues"] == []
    assert status["subsystems"]["supervisor"] == {"enabled": False}
    state = root.state_record()
    assert state["uptime_seconds"] == 65 and state["restart_count"] == 0
    assert state["monitors"]["webhook"] == {"enabled": False}
    root.stopService()


def test_daemon_stop_request_stops_the_reactor_after_replying(tmp_path: Path) -> None:
    root, reactor = make_root(tmp_path)
    assert root.request_stop("test")["stopping"] is True
    assert reactor.stopped == 0
    reactor.advance(0)
    assert reactor.stopped == 1


@pytest_twisted.ensureDeferred
async def test_bus_runs_on_the_real_reactor_without_leftovers(tmp_path: Path) -> None:
    from twisted.internet import reactor

    bus = EventBus(reactor=reactor)
    got: Deferred = Deferred()
    bus.subscribe(["x:*"], lambda e: got.callback(e.topic))
    bus.publish("x:y")
    assert await got == "x:y"
