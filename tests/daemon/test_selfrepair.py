"""SelfRepair with real inotify on the real reactor: it trusts inotify only once its
probe is seen, runs the checks when one of the daemon's files goes (not for other
files), watches a directory again once a check has made it anew, and when inotify
cannot be had leaves the checks to the heartbeat and says so."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from aiwg.daemon.selfrepair import SelfRepair


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, "condition not met in time"
        await deferLater(reactor, 0.01, lambda: None)


def service(tmp_path: Path, checks: list[str]) -> tuple[SelfRepair, Path]:
    daemon_dir = tmp_path / ".aiwg" / "daemon"
    daemon_dir.mkdir(parents=True)
    (daemon_dir / ".lock").write_text("")
    (daemon_dir / "other.txt").write_text("")

    def check() -> None:
        checks.append("checked")
        daemon_dir.mkdir(parents=True, exist_ok=True)
        (daemon_dir / ".lock").write_text("")
    repair = SelfRepair(reactor=reactor, directories=[daemon_dir, daemon_dir.parent], files=[daemon_dir / ".lock"],
                        checks=[check])
    return repair, daemon_dir


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
@pytest_twisted.ensureDeferred
async def test_a_deleted_file_is_checked_at_once_and_other_files_wake_nothing(tmp_path: Path) -> None:
    checks: list[str] = []
    repair, daemon_dir = service(tmp_path, checks)
    repair.startService()
    try:
        await until(lambda: repair.mode == "inotify" and checks == ["checked"])  # the probe's round
        assert repair.status() == {"mode": "inotify", "checks": 1}
        checks.clear()
        (daemon_dir / "other.txt").unlink()
        (daemon_dir / "beat.tmp").write_text("")
        (daemon_dir / "beat.tmp").rename(daemon_dir / "beat")  # the heartbeat's own writes wake nothing
        await deferLater(reactor, 0.2, lambda: None)
        assert checks == []
        (daemon_dir / ".lock").unlink()
        await until(lambda: checks == ["checked"])
        assert (daemon_dir / ".lock").exists()
        # The whole directory: a check makes it anew, and it is watched again.
        for path in daemon_dir.iterdir():
            path.unlink()
        daemon_dir.rmdir()
        await until(lambda: (daemon_dir / ".lock").exists() and len(checks) >= 2)
        seen = len(checks)
        (daemon_dir / ".lock").unlink()
        await until(lambda: len(checks) > seen)
    finally:
        repair.stopService()


@pytest_twisted.ensureDeferred
async def test_without_inotify_the_heartbeat_checks_and_status_says_so(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet import inotify

    def unavailable(*args: object) -> None:
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(inotify, "INotify", unavailable)  # as when the instances are used up
    checks: list[str] = []
    repair, daemon_dir = service(tmp_path, checks)
    repair.startService()
    try:
        (daemon_dir / ".lock").unlink()
        await deferLater(reactor, 0.2, lambda: None)
        assert checks == []
        repair.beat()
        assert checks == ["checked"] and (daemon_dir / ".lock").exists()
        status = repair.status()
        assert status["mode"] == "heartbeat" and "next heartbeat" in status["note"]
    finally:
        repair.stopService()
