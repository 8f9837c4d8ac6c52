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
from aiwg.daemon.watch.watcher import FileWatcher

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


def make(root: Path, native_observer: Any = None, **watch: Any) -> tuple[FileWatcher, list[dict]]:
    bus = EventBus(reactor=reactor)
    published: list[dict] = []
    bus.subscribe(["file:changed", "health:degraded", "file:events_lost"],
                  lambda e: published.append({"topic": e.topic, **e.payload}))
    section = {"enabled": True, "debounce_ms": 150, **watch}
    extra = {"native_observer": native_observer, "probe_timeout": 3.0} if native_observer else {}
    watcher = FileWatcher(reactor=reactor, root=root, bus=bus, config=validate({"watch": section}, "test"),
                          poll_interval=0.2, **extra)
    return watcher, published


def changed(published: list[dict]) -> list[list[str]]:
    return [e["paths"] for e in published if e["topic"] == "file:changed"]


def changes_events(published: list[dict]) -> list[dict]:
    return [e for e in published if e["topic"] == "file:changed"]


def tree(root: Path) -> None:
    for i in range(20):
        (root / "src" / f"pkg{i}").mkdir(parents=True)
        (root / "node_modules" / f"dep{i}" / "lib").mkdir(parents=True)
    (root / ".aiwg" / "daemon" / "events").mkdir(parents=True)  # as the daemon makes it


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
        await until(lambda: changes_events(published))
        await quiet(0.4)
        assert len(published) == 1
        event = changes_events(published)[0]
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
        await until(lambda: changes_events(published))
        changes = {c["path"]: c for c in changes_events(published)[0]["changes"]}
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
        await until(lambda: changes_events(published))
        await quiet(0.5)
        assert changed(published) == [["src/pkg3/a.ts"]]
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
        assert changes_events(published) == []
        watcher.apply_config(validate({"watch": {"enabled": True, "debounce_ms": 150, "paths": ["docs/"]}}, "test"))
        await until(lambda: watcher.status().get("running") and watcher.status()["paths"] == ["docs"])
        (tmp_path / "docs" / "b.md").write_text("watched now")
        await until(lambda: changes_events(published))
        assert changes_events(published)[0]["paths"] == ["docs/b.md"]
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
        await until(lambda: changes_events(published))
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


@linux_only
@pytest_twisted.ensureDeferred
async def test_watches_that_do_not_deliver_fall_back_to_the_stock_watch_and_say_so(tmp_path: Path) -> None:
    """The way watchdog 7.1.1 broke the previous design: kernel watches added,
    their events never routed. The probe at start sees it, the stock recursive
    watch takes over, rules keep firing, and the health names the degradation."""
    from tests.fakes.observers import deaf_to_flat_watches

    tree(tmp_path)
    watcher, published = make(tmp_path, native_observer=deaf_to_flat_watches, ignore=["node_modules/"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"), timeout=15)
        status = watcher.status()
        assert status["backend"] == "native" and status["ignored_trees_watched"] is True
        assert status["degraded"].startswith("file watcher degraded:")
        issues = watcher.health_issues()
        assert len(issues) == 1 and "watchdog " in issues[0] and "stock recursive watch" in issues[0]
        assert "a file in a flat-watched directory" in issues[0]
        await until(lambda: any(e["topic"] == "health:degraded" for e in published))  # the bus delivers later
        (tmp_path / "src" / "pkg4" / "a.ts").write_text("x")
        (tmp_path / "node_modules" / "dep4" / "b.js").write_text("x")
        await until(lambda: changed(published))
        await quiet(0.4)
        assert changed(published) == [["src/pkg4/a.ts"]]
    finally:
        await watcher.stopService()


@linux_only
@pytest_twisted.ensureDeferred
async def test_lost_events_are_found_by_a_rescan_and_reported(tmp_path: Path) -> None:
    """An inotify queue overflow: the changes made while events were being dropped
    come back from a rescan, each once; the loss is published and in the health."""
    from watchdog.events import EventsLostEvent

    tree(tmp_path)
    (tmp_path / "src" / "pkg1" / "kept.ts").write_text("same")
    (tmp_path / "src" / "pkg1" / "edited.ts").write_text("before")
    (tmp_path / "src" / "pkg1" / "removed.ts").write_text("x")
    watcher, published = make(tmp_path, ignore=["node_modules/"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        (tmp_path / "src" / "pkg1" / "seen.ts").write_text("reported the usual way")
        await until(lambda: changed(published))
        # The kernel drops what happens next (the queue overflowed): nothing is routed.
        routers = list(watcher._tree._routers.values())
        saved = [r.handler for r in routers]
        for router in routers:
            router.handler = type("Dropped", (), {"dispatch": lambda self, event: None})()
        (tmp_path / "src" / "pkg1" / "edited.ts").write_text("after, and longer")
        (tmp_path / "src" / "pkg1" / "removed.ts").unlink()
        (tmp_path / "src" / "pkg7" / "new.ts").write_text("x")
        (tmp_path / "node_modules" / "dep1" / "ignored.js").write_text("x")
        await quiet(0.3)
        for router, handler in zip(routers, saved):
            router.handler = handler
        # watchdog then queues one EventsLostEvent for each watch of the observer.
        for watch in list(watcher._tree._watches.values()):
            watcher._observer.event_queue.put((EventsLostEvent(watch.path, is_directory=True), watch))
        await until(lambda: any(e["topic"] == "file:events_lost" for e in published))
        await until(lambda: len(changed(published)) == 2)
        await quiet(0.5)
        second = [e for e in published if e["topic"] == "file:changed"][1]
        assert sorted((c["path"], c["kind"]) for c in second["changes"]) == [
            ("src/pkg1/edited.ts", "modified"), ("src/pkg1/removed.ts", "deleted"), ("src/pkg7/new.ts", "created")]
        assert len(changed(published)) == 2  # once, however many watches reported the loss
        lost = [e for e in published if e["topic"] == "file:events_lost"]
        assert lost[0]["recovered"] == 3
        assert watcher.status()["events_lost"]["count"] == 1
        issues = watcher.health_issues()
        assert len(issues) == 1 and "dropped file events" in issues[0] and "3 change(s)" in issues[0]
    finally:
        await watcher.stopService()


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_directory_renamed_under_the_root_reports_its_old_files_gone(tmp_path: Path) -> None:
    """The root is watched for its own entries (ignored trees below it): a renamed
    top-level directory reports its old files deleted and its new ones created."""
    tree(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.py").write_text("x")
    watcher, published = make(tmp_path, ignore=["node_modules/"])
    watcher.startService()
    try:
        await until(lambda: watcher.status().get("running"))
        os.rename(tmp_path / "lib", tmp_path / "lib2")
        await until(lambda: {c["path"] for e in published if e["topic"] == "file:changed" for c in e["changes"]}
                    >= {"lib/a.py", "lib2/a.py"})
        kinds = {c["path"]: c["kind"] for e in published if e["topic"] == "file:changed" for c in e["changes"]}
        assert kinds["lib/a.py"] == "deleted" and kinds["lib2/a.py"] == "created"
    finally:
        await watcher.stopService()
