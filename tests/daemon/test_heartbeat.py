"""The heartbeat writes at start, every interval (Clock-driven, no sleeps), and at stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.internet.task import Clock

from aiwg.core.config import validate
from aiwg.daemon.heartbeat import Heartbeat
from aiwg.daemon.statefile import write_atomic


def make(tmp_path: Path, clock: Clock, interval: float = 30) -> tuple[Heartbeat, list[float]]:
    calls: list[float] = []

    def state() -> dict:
        calls.append(clock.seconds())
        return {"pid": os.getpid(), "now": clock.seconds()}

    service = Heartbeat(
        reactor=clock,
        heartbeat_file=tmp_path / "heartbeat",
        state_file=tmp_path / "state.json",
        interval=interval,
        heartbeat=lambda: {"pid": os.getpid(), "timestamp": clock.seconds(), "uptime_seconds": int(clock.seconds())},
        state=state,
    )
    return service, calls


def test_writes_at_start_every_interval_and_at_stop(tmp_path: Path) -> None:
    clock = Clock()
    service, calls = make(tmp_path, clock)
    service.startService()
    assert calls == [0]
    clock.advance(29.9)
    assert calls == [0]
    clock.advance(0.1)
    assert calls == [0, 30]
    clock.pump([30, 30])
    assert calls == [0, 30, 60, 90]
    assert json.loads((tmp_path / "heartbeat").read_text())["timestamp"] == 90
    assert json.loads((tmp_path / "state.json").read_text())["now"] == 90
    clock.advance(5)
    service.stopService()
    assert calls[-1] == 95
    assert clock.getDelayedCalls() == []


def test_reload_changes_the_interval_without_restart(tmp_path: Path) -> None:
    clock = Clock()
    service, calls = make(tmp_path, clock)
    service.startService()
    service.apply_config(validate({"daemon": {"heartbeat_interval_seconds": 5}}, "x"))
    clock.advance(5)
    clock.advance(5)
    assert calls == [0, 5, 10]
    service.stopService()


def test_a_failing_write_is_logged_reported_and_the_loop_survives(tmp_path: Path) -> None:
    clock = Clock()
    service, calls = make(tmp_path, clock)
    service.startService()
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path / "x", os.W_OK) or os.geteuid() == 0:
            # root ignores directory modes: break the target instead
            os.chmod(tmp_path, 0o700)
            (tmp_path / "state.json").unlink()
            (tmp_path / "state.json").mkdir()
            (tmp_path / "state.json" / "keep").write_text("")
        clock.advance(30)
        assert service.health_issues() and "cannot write" in service.health_issues()[0]
    finally:
        os.chmod(tmp_path, 0o700)
    (tmp_path / "state.json" / "keep").unlink()
    (tmp_path / "state.json").rmdir()
    clock.advance(30)
    assert service.health_issues() == []
    assert json.loads((tmp_path / "state.json").read_text())["now"] == 60
    service.stopService()


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]


def test_with_a_writer_the_periodic_writes_leave_the_reactor_and_errors_still_show(tmp_path: Path) -> None:
    from aiwg.daemon.statefile import BackgroundWriter

    clock = Clock()
    writer = BackgroundWriter()
    calls: list[float] = []
    service = Heartbeat(
        reactor=clock, heartbeat_file=tmp_path / "heartbeat", state_file=tmp_path / "state.json", interval=30,
        heartbeat=lambda: {"timestamp": clock.seconds()},
        state=lambda: calls.append(clock.seconds()) or {"now": clock.seconds()}, writer=writer,
    )
    service.startService()  # the first write is the reactor's own: a failure fails the start
    clock.advance(30)
    writer.close()  # what is queued is written
    assert json.loads((tmp_path / "state.json").read_text())["now"] == 30
    (tmp_path / "state.json").unlink()
    (tmp_path / "state.json").mkdir()  # cannot be replaced by a file
    (tmp_path / "state.json" / "keep").write_text("")
    clock.advance(30)
    writer.close()
    clock.advance(30)  # the next beat reports what the last one could not write
    writer.close()
    assert service.health_issues() and "cannot write" in service.health_issues()[0]
    (tmp_path / "state.json" / "keep").unlink()
    (tmp_path / "state.json").rmdir()
    clock.advance(30)
    writer.close()
    clock.advance(30)
    assert service.health_issues() == []
    service.stopService()
    assert json.loads((tmp_path / "state.json").read_text())["now"] == 150
    assert calls == [0, 30, 60, 90, 120, 150, 150]
