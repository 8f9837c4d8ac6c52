# tests: tests/daemon/test_watcher.py, tests/e2e/test_automation.py
"""The file watcher: watchdog in its own threads, one `file:changed` event per burst.

watchdog's threads do nothing but translate each raw event into a project-relative
`(path, kind, source)` and drop what `watch.ignore` and the entry's own filters
exclude (`.aiwg/daemon/` always); the rest crosses to the reactor in batches with
`callFromThread`. On the reactor a trailing debouncer gathers a burst into a
ChangeSet and publishes it as one `file:changed` event.

If the kernel's inotify limits are hit, the watcher says so in the log and in the
daemon's health (naming `fs.inotify.max_user_watches`) and carries on by polling.

A watch path that does not exist (yet, or any more: `rm -rf build && mkdir build`)
is looked for every MISSING_CHECK_INTERVAL seconds and watched once it is there; the
files already in it then are reported as created.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from aiwg import procfs
from aiwg.core.config import Config
from aiwg.core.text import display_path
from aiwg.core.watching import ChangeSet, WatchEntry, WatchPlan, plan_from_config
from aiwg.daemon.debounce import Debouncer
from aiwg.daemon.logs import iso_utc
from aiwg.daemon.observers import native_observer, polling_observer

#: Seconds between scans when polling (use_polling, or after an inotify limit).
POLL_INTERVAL = 2.0
#: Counting kernel watches reads one /proc line per watched directory: done in a
#: pool thread, at most this often, never on the reactor.
WATCH_COUNT_MAX_AGE = 60.0
WATCH_KINDS = ("created", "modified", "deleted", "moved")
#: Seconds between looks for a watch path that is missing.
MISSING_CHECK_INTERVAL = 1.0


def _proc_sys(name: str) -> str:
    try:
        return Path(f"/proc/sys/fs/inotify/{name}").read_text().strip()
    except OSError:
        return "unknown"


def _text(path: Any) -> str:
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else str(path)


class _Translator:
    """Runs in watchdog's thread: raw event → filtered, project-relative change."""

    def __init__(self, watcher: "FileWatcher", root: str, plan: WatchPlan, entry: WatchEntry, generation: int) -> None:
        self._watcher = watcher
        self._prefix = root.rstrip("/") + "/"
        self._top = (self._prefix + entry.path).rstrip("/")
        self._plan = plan
        self._entry = entry
        self._generation = generation

    def dispatch(self, event: Any) -> None:
        if event.is_directory:
            if event.event_type == "deleted" and _text(event.src_path).rstrip("/") == self._top:
                self._watcher._from_thread_gone(self._generation, self._entry.path or ".")
            return
        if event.event_type not in WATCH_KINDS:
            return
        src = self._relative(event.src_path)
        if event.event_type == "moved":
            dest = self._relative(event.dest_path)
            src_ok = src is not None and self._admits(src, "deleted")
            dest_ok = dest is not None and self._admits(dest, "moved")
            if src_ok and dest_ok:
                self._watcher._from_thread(self._generation, (dest, "moved", src))
            elif dest_ok:
                self._watcher._from_thread(self._generation, (dest, "created", None))
            elif src_ok:
                self._watcher._from_thread(self._generation, (src, "deleted", None))
            return
        if src is not None and self._admits(src, event.event_type):
            self._watcher._from_thread(self._generation, (src, event.event_type, None))

    def _relative(self, path: Any) -> str | None:
        text = _text(path)
        if not text.startswith(self._prefix):
            return None
        return display_path(text[len(self._prefix):])  # a name that is not UTF-8: `bad\xff.txt`

    def _admits(self, relative: str, kind: str) -> bool:
        return self._plan.admits(self._entry, relative, kind)


class FileWatcher(Service):
    name = "file_watcher"
    log = Logger()

    def __init__(self, *, reactor: Any, root: Path, bus: Any, config: Config,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self._reactor = reactor
        self.root = Path(root).resolve()
        self._bus = bus
        self._section = config.section("watch")
        self._poll_interval = poll_interval
        self._observer: Any = None
        self._generation = 0
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str | None]] = []
        self._drain_scheduled = False
        self._seq = itertools.count()
        self._debouncer: Debouncer | None = None
        self._starting: Deferred | None = None
        self.plan: WatchPlan | None = None
        self.backend: str | None = None
        self.pruned = False
        self.missing: list[str] = []
        self.degraded: str | None = None
        self.limit_hit = False
        self.events_received = 0
        self.changes_published = 0
        self.last_change: float | None = None
        self.error: str | None = None
        self._watch_count: int | None = None
        self._watch_count_at = 0.0
        self._counting = False
        self._missing_check: Any = None  # the next look for missing watch paths
        self.gone: list[str] = []  # watch paths deleted while watched

    @property
    def enabled(self) -> bool:
        return bool(self._section.get("enabled"))

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        if self.enabled:
            self._start(polling=bool(self._section.get("use_polling")))

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return self._stop()

    def _start(self, *, polling: bool) -> Deferred:
        plan = plan_from_config(self._section)
        self.plan = plan
        self._generation += 1
        generation = self._generation
        self._debouncer = Debouncer(reactor=self._reactor, wait=plan.debounce_seconds, function=self._publish)
        entries = [e for e in plan.entries if (self.root / e.path).is_dir()]
        self.missing = [e.path or "." for e in plan.entries if e not in entries]
        self.gone = [path for path in self.gone if path in self.missing]
        for path in self.missing:
            if path not in self.gone:
                self.log.warn("file watcher: watch path {path} does not exist; watching it once it does", path=path)
        self._look_for_missing_later()
        self.backend = "polling" if polling else "native"
        self.error = None
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                              self._build_observer, plan, entries, generation, polling)
        self._starting = d

        def started(observer: Any) -> None:
            if generation != self._generation:  # stopped or restarted meanwhile
                self._stop_observer_in_thread(observer)  # its Deferred is nobody's to wait on
                return
            self._observer = observer
            self.log.info(
                "file watcher started ({backend}{pruned}) on {paths}; ignoring {ignore}",
                backend=self.backend, pruned=", ignored trees not watched" if self.pruned else "",
                paths=", ".join(e.path or "." for e in entries) or "nothing",
                ignore=", ".join(self._section.get("ignore") or []) or "only .aiwg/daemon/",
            )

        def failed(failure: Any) -> None:
            exc = failure.value
            if generation != self._generation:
                return
            if not polling and getattr(exc, "errno", None) in (28, 24):  # ENOSPC, EMFILE
                self._limit(exc)
                return
            self.error = str(exc)
            self.log.error("file watcher could not start: {error}", error=str(exc))

        d.addCallbacks(started, failed)
        d.addBoth(lambda _: setattr(self, "_starting", None) if self._starting is d else None)
        return d

    def _build_observer(self, plan: WatchPlan, entries: list[WatchEntry], generation: int, polling: bool) -> Any:
        """In a pool thread: walking a big tree to add watches must not block the reactor."""
        root = str(self.root)

        def prune(path: str) -> bool:
            prefix = root.rstrip("/") + "/"
            return path.startswith(prefix) and plan.ignore.ignores_dir(path[len(prefix):])

        def on_limit(exc: OSError) -> None:
            self._reactor.callFromThread(self._limit, exc)

        if polling:
            observer, self.pruned = polling_observer(prune, self._poll_interval), True
        else:
            observer, self.pruned = native_observer(prune, on_limit)
        from watchdog.events import (DirDeletedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent,
                                     FileMovedEvent)

        # Directory deletions only to notice a watch path itself going away.
        wanted = [FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, DirDeletedEvent]
        for entry in entries:
            observer.schedule(_Translator(self, root, plan, entry, generation),
                              str(self.root / entry.path), recursive=True, event_filter=wanted)
        try:
            observer.start()
        except BaseException:
            try:
                observer.stop()
            except Exception:
                pass
            raise
        if not polling:
            self._watch_count, self._watch_count_at = procfs.inotify_watch_count(), self._reactor.seconds()
        return observer

    def _stop(self) -> Deferred:
        self._generation += 1
        if self._missing_check is not None and self._missing_check.active():
            self._missing_check.cancel()
        self._missing_check = None
        observer, self._observer = self._observer, None
        with self._lock:
            self._pending = []
        if self._debouncer is not None:
            self._debouncer.stop()
            self._debouncer = None
        if observer is None:
            return succeed(None)
        return self._stop_observer_in_thread(observer)

    @staticmethod
    def _stop_observer(observer: Any) -> None:
        observer.stop()
        observer.join(timeout=10)

    def _stop_observer_in_thread(self, observer: Any) -> Deferred:
        """Stopping joins watchdog's threads: never on the reactor."""
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._stop_observer, observer)

    # -- events ------------------------------------------------------------

    def _from_thread(self, generation: int, change: tuple[str, str, str | None]) -> None:
        """Called in watchdog's thread: queue the change, wake the reactor once per batch."""
        with self._lock:
            if generation != self._generation:
                return
            self._pending.append(change)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._reactor.callFromThread(self._drain)

    def _from_thread_gone(self, generation: int, path: str) -> None:
        """Called in watchdog's thread: a watch path itself was deleted."""
        self._reactor.callFromThread(self._gone, generation, path)

    def _gone(self, generation: int, path: str) -> None:
        if generation != self._generation or path in self.missing:
            return
        self.missing.append(path)
        self.gone.append(path)
        self.log.warn("file watcher: watch path {path} was deleted; watching it again once it exists", path=path)
        self._look_for_missing_later()

    def _look_for_missing_later(self) -> None:
        if self.missing and self.running and (self._missing_check is None or not self._missing_check.active()):
            self._missing_check = self._reactor.callLater(MISSING_CHECK_INTERVAL, self._look_for_missing)

    def _look_for_missing(self) -> None:
        """Watch what has appeared (by restarting the watch, which walks the tree
        again); the files already in it are news to the rules: report them."""
        self._missing_check = None
        appeared = [path for path in self.missing if (self.root / path).is_dir()]
        if not appeared:
            self._look_for_missing_later()
            return
        self.log.info("file watcher: watch path {paths} exists now; watching it", paths=", ".join(appeared))
        polling = self.backend == "polling"
        plan = self.plan
        self._drain()  # what is on its way (the deletions, say) goes on after the restart
        carried = self._debouncer.take() if self._debouncer is not None else []
        restart = self._stop()
        restart.addCallback(lambda _: self._start(polling=polling) if self.running else None)
        if plan is not None:
            restart.addCallback(lambda _: self._report_present(plan, appeared, carried))

    def _report_present(self, plan: WatchPlan, paths: list[str], carried: list[Any]) -> Deferred:
        entries = [e for e in plan.entries if (e.path or ".") in paths]
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _present_files,
                              str(self.root), plan, entries)

        def report(found: list[str]) -> None:
            if self._debouncer is None:
                return
            self.events_received += len(found)
            for change in [*carried, *((relative, "created", None) for relative in found)]:
                self._debouncer.push(change, key=next(self._seq))

        return d.addCallback(report)

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._drain_scheduled = False
        if self._debouncer is None:
            return
        self.events_received += len(batch)
        for change in batch:
            self._debouncer.push(change, key=next(self._seq))

    def _publish(self, batch: list[tuple[str, str, str | None]]) -> None:
        changes = ChangeSet()
        for path, kind, source in batch:
            changes.add(path, kind, source)
        if not len(changes):
            return  # e.g. a temporary file created and deleted within the burst
        self.changes_published += 1
        self.last_change = self._reactor.seconds()
        self._bus.publish("file:changed", changes.payload(), source="watch")

    # -- inotify limits ------------------------------------------------------

    def _limit(self, exc: OSError) -> None:
        if self.limit_hit or not self.running:
            return
        self.limit_hit = True
        if getattr(exc, "errno", None) == 24:  # EMFILE: too many inotify instances
            key, value, advice = "fs.inotify.max_user_instances", _proc_sys("max_user_instances"), "1024"
        else:
            key, value, advice = "fs.inotify.max_user_watches", _proc_sys("max_user_watches"), "524288"
        self.degraded = (
            f"file watcher: the inotify limit was reached ({exc.strerror or exc}; "
            f"{key} = {value}); fell back to polling every {self._poll_interval:g} s. "
            f"Raise the limit (sudo sysctl {key}={advice}) or add large directories to "
            "watch.ignore, then run aiwg daemon reload"
        )
        self.log.error("{message}", message=self.degraded)
        self._bus.publish("health:degraded", {"issues": [self.degraded], "subsystem": "file_watcher"})
        self._stop().addCallback(lambda _: self._start(polling=True) if self.running else None)

    # -- reload and status --------------------------------------------------

    def check_config(self, config: Config) -> list[str]:
        return []  # validated with the configuration itself

    def apply_config(self, config: Config) -> None:
        """Restart the watch when its section changed — or when it is degraded, has a
        missing path or failed, so `aiwg daemon reload` retries after the fix."""
        section = config.section("watch")
        retry = bool(self.degraded or self.error or self.missing)
        if section == self._section and not (retry and self.enabled):
            return
        self._section = section
        self.limit_hit, self.degraded = False, None
        if not self.running:
            return
        restart = self._stop()
        if self.enabled:
            restart.addCallback(lambda _: self._start(polling=bool(section.get("use_polling"))))
            self.log.info("file watcher: configuration changed; restarting the watch")
        else:
            self.log.info("file watcher: disabled by the new configuration")

    def _refresh_watch_count(self) -> None:
        if self._counting or self._reactor.seconds() - self._watch_count_at < WATCH_COUNT_MAX_AGE:
            return
        self._counting = True

        def counted(count: int | None) -> None:
            self._watch_count, self._watch_count_at = count, self._reactor.seconds()

        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), procfs.inotify_watch_count)
        d.addCallbacks(counted, lambda f: None)
        d.addBoth(lambda _: setattr(self, "_counting", False))

    def health_issues(self) -> list[str]:
        issues = []
        if self.degraded:
            issues.append(self.degraded)
        if self.error and self.enabled:
            issues.append(f"file watcher not running: {self.error}")
        for path in self.gone:
            issues.append(f"file watcher: watch path {path} was deleted; watching it again once it exists")
        return issues

    def status(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        status: dict[str, Any] = {
            "enabled": True,
            "running": self._observer is not None,
            "backend": self.backend,
            "ignored_trees_watched": not self.pruned,
            "paths": self.plan.paths if self.plan else [],
            "missing": list(self.missing),
            "debounce_ms": int(self._section.get("debounce_ms", 1000)),
            "events_received": self.events_received,
            "changes_published": self.changes_published,
            "last_change": iso_utc(self.last_change) if self.last_change else None,
        }
        if self.backend == "native" and self._observer is not None:
            status["kernel_watches"] = self._watch_count
            self._refresh_watch_count()
        if self.degraded:
            status["degraded"] = self.degraded
        if self.error:
            status["error"] = self.error
        return status


#: At most this many files are reported for a watch path that appears.
MAX_PRESENT_FILES = 10_000


def _present_files(root: str, plan: WatchPlan, entries: list[WatchEntry]) -> list[str]:
    """In a pool thread: the files under `entries` that the watch would report,
    ignored trees not entered."""
    prefix = root.rstrip("/") + "/"
    found: list[str] = []
    for entry in entries:
        for top, dirs, files in os.walk(os.path.join(root, entry.path)):
            relative_top = top[len(prefix):] if top.startswith(prefix) else ""
            dirs[:] = [d for d in dirs if not plan.ignore.ignores_dir(os.path.join(relative_top, d))]
            for name in files:
                relative = display_path(os.path.join(relative_top, name))
                if plan.admits(entry, relative, "created"):
                    found.append(relative)
                    if len(found) >= MAX_PRESENT_FILES:
                        return found
    return found
