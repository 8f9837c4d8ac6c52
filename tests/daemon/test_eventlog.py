"""The event log: one JSON line per event in a UTC day file, bounded by days and size."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.task import Clock

from aiwg.core.config import EventLogSettings
from aiwg.daemon.bus import EventBus
from aiwg.daemon.eventlog import EventLog

DAY = 86400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def make(tmp_path: Path, clock: Clock, days: int = 7, max_mb: float = 20) -> tuple[EventBus, EventLog]:
    bus = EventBus(reactor=clock)
    log = EventLog(bus=bus, directory=tmp_path, settings=EventLogSettings(days, max_mb))
    return bus, log


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_go_to_the_utc_day_file(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(T0 + 10)
    bus, log = make(tmp_path, clock)
    log.startService()
    bus.publish("daemon:started", {"pid": 1})
    bus.publish("task:output", {"chunk": "noise"})
    clock.advance(0)
    clock.advance(DAY)
    bus.publish("deploy:done", {"v": 2}, source="client")
    log.stopService()  # delivers what is still pending
    assert [e["topic"] for e in lines(tmp_path / "2026-01-01.jsonl")] == ["daemon:started"]
    [record] = lines(tmp_path / "2026-01-02.jsonl")
    assert record == {"timestamp": "2026-01-02T00:00:10.000Z", "topic": "deploy:done",
                      "source": "client", "seq": 3, "payload": {"v": 2}}
    bus.close()


def test_old_days_are_pruned(tmp_path: Path) -> None:
    for day in ("2025-12-20", "2025-12-29", "2025-12-30", "2026-01-01"):
        (tmp_path / f"{day}.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("kept")
    clock = Clock()
    clock.advance(T0 + 5)
    bus, log = make(tmp_path, clock, days=3)
    log.startService()
    log.stopService()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2025-12-30.jsonl", "2026-01-01.jsonl", "notes.txt"]
    bus.close()


def test_a_day_file_stops_at_its_size_limit_with_a_marker(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    bus, log = make(tmp_path, clock, max_mb=0.001)  # ~1 KiB
    log.startService()
    for i in range(100):
        bus.publish("load:test", {"i": i, "pad": "x" * 50})
    clock.advance(0)
    log.stopService()
    path = tmp_path / "2026-01-01.jsonl"
    records = lines(path)
    assert records[-1]["topic"] == "eventlog:truncated"
    assert path.stat().st_size < 1024 + 200
    bus.close()


def test_retention_zero_turns_it_off(tmp_path: Path) -> None:
    clock = Clock()
    bus, log = make(tmp_path, clock, days=0)
    log.startService()
    bus.publish("a:b")
    clock.advance(0)
    log.stopService()
    assert list(tmp_path.iterdir()) == []
    bus.close()


def test_the_lines_of_a_turn_are_on_disk_at_its_end(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    bus, log = make(tmp_path, clock)
    log.startService()
    for i in range(3):
        bus.publish("task:queued", {"taskId": f"t-{i}"})
    clock.advance(0)  # one delivery turn, one write
    assert [e["payload"]["taskId"] for e in lines(tmp_path / "2026-01-01.jsonl")] == ["t-0", "t-1", "t-2"]
    assert log.written == 3
    log.stopService()
    bus.close()
