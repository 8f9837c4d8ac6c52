"""The file watcher with the real watchdog on a temporary tree: one event per burst,
ignored trees not even watched, inotify limits turned into a degraded, polling watcher."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from aiwg import procfs
from aiwg.core.config import validate
from aiwg.daemon.bus import EventBus
from aiwg.daemon.watcher import FileWatcher

linux_only = pytest.mark.skipif(not Path("/proc/self/fdinfo").exists(), reason="needs Linux inotify and /proc")


async def until(predicate: Any, timeout: float = 10.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


async def quiet(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def make(root: Path, **watch: Any) -> tuple[FileWatcher, list[dict]]:
    bus = EventBus(reactor=reactor)
    published: list[dict] = []
    bus.subscribe(["file:changed", "health:degraded"], lambda e: published.append({"topic": e.topic, **e.payload}))
    section = {"enabled": True, "debounce_ms": 150, **watch}
    watcher = FileWatcher(reactor=reactor, root=root, bus=bus, config=validate({"watch": section}, "test"),
                          poll_interval=0.2)
    return watcher, published


def tree(root: Path) -> None:
    for i in range(20):
        (root / "src" / f"pkg{i}").mkdir(parents=True)
        (root / "node_modules" / f"dep{i}" / "lib").mkdir(parents=True)
    (root / ".aiwg" / "daemon").mkdir(parents=True)


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_burst_is_one_event_and_ignored_trees_are_not_watched(tmp_path: Path) -> None:
    tree(tmp_path)
    before = procfs.inotify_watch_count() or 0
    watcher, published = make(tmp_path, ignore=["node_modules/", "*.log"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        status = watcher.status()
        assert status["backend"] == "native" and status["ignored_trees_watched"] is False
        # root, .aiwg, src and its 20 packages: never node_modules' 40 directories or .aiwg/daemon
        assert (procfs.inotify_watch_count() or 0) - before == 23
        for i in range(20):
            (tmp_path / "src" / f"pkg{i}" / "index.ts").write_text("export {}\n")
        (tmp_path / "node_modules" / "dep1" / "x.js").write_text("ignored")
        (tmp_path / "src" / "debug.log").write_text("ignored")
        (tmp_path / ".aiwg" / "daemon" / "daemon.log").write_text("never")
        await until(lambda: published)
        await quiet(0.4)
        assert len(published) == 1
        event = published[0]
        assert event["topic"] == "file:changed" and event["count"] == 20
        assert sorted(event["paths"]) == sorted(f"src/pkg{i}/index.ts" for i in range(20))
        assert {c["kind"] for c in event["changes"]} == {"created"}
    finally:
        await watcher.stopService()


@linux_only
@pytest_twisted.ensureDeferred
async def test_moves_deletes_and_new_directories(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "old.ts").write_text("x")
    (tmp_path / "src" / "gone.ts").write_text("x")
    watcher, published = make(tmp_path)
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        os.rename(tmp_path / "src" / "old.ts", tmp_path / "src" / "new.ts")
        (tmp_path / "src" / "gone.ts").unlink()
        (tmp_path / "src" / "fresh" / "deep").mkdir(parents=True)
        await quiet(0.05)
        (tmp_path / "src" / "fresh" / "deep" / "a.ts").write_text("new directory, watched at once")
        await until(lambda: published)
        changes = {c["path"]: c for c in published[0]["changes"]}
        assert changes["src/new.ts"] == {"path": "src/new.ts", "kind": "moved", "from": "src/old.ts"}
        assert changes["src/gone.ts"]["kind"] == "deleted"
        assert changes["src/fresh/deep/a.ts"]["kind"] == "created"
    finally:
        await watcher.stopService()


@pytest_twisted.ensureDeferred
async def test_polling_backend_prunes_and_reports(tmp_path: Path) -> None:
    tree(tmp_path)
    watcher, published = make(tmp_path, use_polling=True, ignore=["node_modules/"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        assert watcher.status()["backend"] == "polling"
        (tmp_path / "src" / "pkg3" / "a.ts").write_text("x")
        (tmp_path / "node_modules" / "dep3" / "b.js").write_text("x")
        await until(lambda: published)
        await quiet(0.5)
        assert [e["paths"] for e in published] == [["src/pkg3/a.ts"]]
    finally:
        await watcher.stopService()


@linux_only
@pytest_twisted.ensureDeferred
async def test_watch_limit_degrades_to_polling_and_keeps_reporting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.observers import inotify_c

    tree(tmp_path)
    real = inotify_c.InotifyFD.add_callback
    calls = {"n": 0}

    def limited(self: Any, path: bytes, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 5:  # as if fs.inotify.max_user_watches were tiny
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real(self, path, *args)

    monkeypatch.setattr(inotify_c.InotifyFD, "add_callback", limited)
    watcher, published = make(tmp_path)
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("backend") == "polling" and watcher.status().get("running"))
        issues = watcher.health_issues()
        assert len(issues) == 1 and "fs.inotify.max_user_watches" in issues[0] and "polling" in issues[0]
        assert any(e["topic"] == "health:degraded" for e in published)
        (tmp_path / "src" / "pkg19" / "late.ts").write_text("still seen")
        await until(lambda: any(e["topic"] == "file:changed" for e in published))
        changed = [e for e in published if e["topic"] == "file:changed"]
        assert changed[0]["paths"] == ["src/pkg19/late.ts"]
    finally:
        await watcher.stopService()


@pytest_twisted.ensureDeferred
async def test_reload_applies_new_paths_and_disable(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "docs").mkdir()
    watcher, published = make(tmp_path, paths=["src/"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        (tmp_path / "docs" / "a.md").write_text("not watched")
        await quiet(0.4)
        assert published == []
        watcher.apply_config(validate({"watch": {"enabled": True, "debounce_ms": 150, "paths": ["docs/"]}}, "test"))
        await until(lambda: watcher.status().get("running") and watcher.status()["paths"] == ["docs"])
        (tmp_path / "docs" / "b.md").write_text("watched now")
        await until(lambda: published)
        assert published[0]["paths"] == ["docs/b.md"]
        watcher.apply_config(validate({"watch": {"enabled": False}}, "test"))
        await quiet(0.2)
        assert watcher.status() == {"enabled": False}
    finally:
        await watcher.stopService()


@pytest_twisted.ensureDeferred
async def test_missing_path_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    watcher, published = make(tmp_path, paths=["src/", "test/"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        assert watcher.status()["missing"] == ["test"]
        (tmp_path / "src" / "a.ts").write_text("x")
        await until(lambda: published)
        # Once the path exists it is watched, without a reload.
        (tmp_path / "test").mkdir()
        await until(lambda: watcher.status().get("running") and watcher.status()["missing"] == [])
        (tmp_path / "test" / "b.ts").write_text("x")
        await until(lambda: any(e.get("paths") == ["test/b.ts"] for e in published))
        assert watcher.health_issues() == []  # missing from the start is not a fault
    finally:
        await watcher.stopService()


@pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
@pytest_twisted.ensureDeferred
async def test_a_watch_path_deleted_and_made_again_is_watched_again(tmp_path: Path, polling: bool) -> None:
    """`rm -rf build && mkdir build`: the kernel drops the watch with the directory.
    The deletion is published (file by file where inotify reports them; watchdog's
    polling only sees the directory go), the path is a health issue while it is gone,
    and once it is back it is watched again; files already in it by then count as
    created."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "old.ts").write_text("x")
    watcher, published = make(tmp_path, paths=["src/"], use_polling=polling)
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        shutil.rmtree(tmp_path / "src")
        await until(lambda: watcher.status()["missing"] == ["src"])
        assert watcher.health_issues() == ["file watcher: watch path src was deleted; watching it again once it exists"]
        if not polling:
            await until(lambda: any(c["path"] == "src/old.ts" and c["kind"] == "deleted"
                                    for e in published for c in e["changes"]))
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "early.ts").write_text("x")  # before the watch is back
        await until(lambda: any("src/early.ts" in e["paths"] for e in published))
        await until(lambda: watcher.status()["missing"] == [] and watcher.status()["running"])
        assert watcher.health_issues() == []
        (tmp_path / "src" / "later.ts").write_text("x")
        await until(lambda: any("src/later.ts" in e["paths"] for e in published))
    finally:
        await watcher.stopService()
