# tests: tests/daemon/test_watcher.py, tests/e2e/test_automation.py
"""The file watcher: watchdog in its own threads, one `file:changed` event per burst.

watchdog's threads do nothing but translate each raw event into a project-relative
`(path, kind, source)` and drop what `watch.ignore` and the entry's own filters
exclude (`.aiwg/daemon/` always); the rest crosses to the reactor in batches with
`callFromThread`. On the reactor a trailing debouncer gathers a burst into a
ChangeSet and publishes it as one `file:changed` event.

Ignored trees are kept out of the kernel's watches (observers.TreeWatch), and
whether the watches deliver is proved at every start by a probe through the same
observer. When the probe fails the watcher falls back to watchdog's stock recursive
watch (ignored trees watched, their events dropped), then to polling, and says
"file watcher degraded: …" in the log, the health and the status, naming the
watchdog version and the cause. If the kernel's inotify limits are hit, the
watcher says so (naming `fs.inotify.max_user_watches`) and carries on by polling.

Events the kernel dropped (its queue overflowed: watchdog's EventsLostEvent) are
never silent: the watched trees are rescanned and compared with what was known,
the real differences are reported once, and the loss is published and shown in
the health for a while.

A watch path that does not exist (yet, or any more: `rm -rf build && mkdir build`)
is looked for every MISSING_CHECK_INTERVAL seconds and watched once it is there; the
files already in it then are reported as created.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from aiwg import procfs
from aiwg.core.config import Config
from aiwg.core.globs import IgnoreSet
from aiwg.core.timefmt import iso_utc
from aiwg.core.watching import ChangeSet, Stamp, WatchEntry, WatchPlan, plan_from_config, snapshot_diff
from aiwg.daemon.debounce import Debouncer
from aiwg.daemon.watch.events import Translator
from aiwg.daemon.watch.files import MAX_INDEXED_FILES, index_files, present_files, stamp, under_any
from aiwg.daemon.watch.observers import (LIMIT_ERRNOS, PROBE_TIMEOUT, TreeWatch, native_observer, polling_observer,
                                         probe, watchdog_version)

#: Seconds between scans when polling (use_polling, or after an inotify limit).
POLL_INTERVAL = 2.0
#: Counting kernel watches reads one /proc line per watched directory: done in a
#: pool thread after changes, at most this often, never on the reactor.
WATCH_COUNT_MAX_AGE = 60.0
#: Seconds between looks for a watch path that is missing.
MISSING_CHECK_INTERVAL = 1.0
#: How long a loss of kernel events stays in the daemon's health.
EVENTS_LOST_SHOWN_FOR = 600.0
#: Seconds after a directory goes away before its known files are looked for (once
#: for the whole burst: `rm -rf` of a tree reports every directory).
GONE_CHECK_DELAY = 0.1


def _proc_sys(name: str) -> str:
    try:
        return Path(f"/proc/sys/fs/inotify/{name}").read_text().strip()
    except OSError:
        return "unknown"


class FileWatcher(Service):
    name = "file_watcher"
    log = Logger()

    def __init__(self, *, reactor: Any, root: Path, bus: Any, config: Config,
                 poll_interval: float = POLL_INTERVAL, native_observer: Any = native_observer,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        self._reactor = reactor
        self.root = Path(root).resolve()
        self._native_observer = native_observer
        self._probe_timeout = probe_timeout
        self._tree: TreeWatch | None = None
        self.fallback: str | None = None  # why the watches are not the first choice
        self._index: dict[str, Stamp] = {}  # admitted files as last seen: what a rescan compares with
        self._rescanning = False
        self._rescan_again = False
        self._touched: set[str] = set()  # paths events reported while a rescan walked the tree
        self._gone_dirs: set[str] = set()  # directories gone: their known files to look for
        self._gone_check_scheduled = False
        self._gone_call: Any = None
        self.events_lost = 0
        self.last_events_lost: float | None = None
        self.last_recovered = 0
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

        def started(built: tuple[TreeWatch, str, str | None]) -> None:
            tree, backend, note = built
            if generation != self._generation:  # stopped or restarted meanwhile
                self._stop_observer_in_thread(tree.observer)  # its Deferred is nobody's to wait on
                return
            self._tree, self._observer = tree, tree.observer
            self.backend, self.pruned = backend, tree.prunes or backend == "polling"
            self.fallback = note
            if note:
                self.log.warn("{message}", message=note)
                self._bus.publish("health:degraded", {"issues": [note], "subsystem": "file_watcher"})
            self.log.info(
                "file watcher started ({backend}{pruned}) on {paths}; ignoring {ignore}",
                backend=self.backend, pruned=", ignored trees not watched" if self.pruned else "",
                paths=", ".join(e.path or "." for e in entries) or "nothing",
                ignore=", ".join([*(self._section.get("ignore") or []), *IgnoreSet.ALWAYS]),
            )

        def failed(failure: Any) -> None:
            exc = failure.value
            if generation != self._generation:
                return
            if not polling and getattr(exc, "errno", None) in LIMIT_ERRNOS:
                self._limit(exc)
                return
            self.error = str(exc)
            self.log.error("file watcher could not start: {error}", error=str(exc))

        d.addCallbacks(started, failed)
        d.addBoth(lambda _: setattr(self, "_starting", None) if self._starting is d else None)
        return d

    def _build_observer(self, plan: WatchPlan, entries: list[WatchEntry], generation: int,
                        polling: bool) -> tuple[TreeWatch, str, str | None]:
        """In a pool thread (walking a big tree must not block the reactor): the
        running watches, their backend, and why they are not the first choice.

        Native watches are kept only once a probe through the same observer has
        seen its own changes arrive: first with ignored trees left out, then
        watchdog's stock recursive watch, then polling."""
        prefix = str(self.root).rstrip("/") + "/"

        def ignored(path: str) -> bool:
            return path.startswith(prefix) and plan.ignore.ignores_dir(path[len(prefix):])

        index = index_files(str(self.root), plan, entries)
        with self._lock:
            self._index = index
        causes: list[str] = []
        def on_limit(exc: OSError) -> None:  # in watchdog's thread
            self._reactor.callFromThread(self._limit, exc)

        if not polling:
            for prunes in (True, False):
                tree = self._started_tree(TreeWatch(self._native_observer(), prunes=prunes, on_limit=on_limit),
                                          plan, entries, generation, ignored)
                try:
                    # A scratch directory of this attempt's own, outside every watched tree:
                    # two watch groups on one directory race inside watchdog.
                    cause = probe(tree, tempfile.mkdtemp(prefix="aiwg-watch-probe-"), self._probe_timeout)
                except BaseException:  # a kernel limit (the watcher polls then), or a bug
                    self._stop_observer(tree.observer)  # nothing is left watching
                    raise
                if cause is None:
                    self._watch_count, self._watch_count_at = procfs.inotify_watch_count(), self._reactor.seconds()
                    return tree, "native", self._degraded_note(causes, "watchdog's stock recursive watch "
                                                               "(ignored trees are watched, their events dropped)")
                causes.append(f"{'with ignored trees left out' if prunes else 'stock recursive watch'}: {cause}")
                self._stop_observer(tree.observer)
        tree = self._started_tree(TreeWatch(polling_observer(ignored, self._poll_interval), prunes=False),
                                  plan, entries, generation, ignored)
        return tree, "polling", self._degraded_note(causes, f"polling every {self._poll_interval:g} s")

    @staticmethod
    def _degraded_note(causes: list[str], fallback: str) -> str | None:
        if not causes:
            return None
        return (f"file watcher degraded: native watches did not deliver a probe change with watchdog "
                f"{watchdog_version()} ({'; '.join(causes)}); using {fallback}. "
                "Pin watchdog to a release this version was tested with, and report it")

    def _started_tree(self, tree: TreeWatch, plan: WatchPlan, entries: list[WatchEntry], generation: int,
                      ignored: Any) -> TreeWatch:
        root = str(self.root)
        try:
            for entry in entries:
                tree.add(str(self.root / entry.path), Translator(self, root, plan, entry, generation), ignored)
            tree.observer.start()
        except BaseException:
            try:
                tree.observer.stop()
            except Exception:
                pass
            raise
        return tree

    def _stop(self) -> Deferred:
        self._generation += 1
        if self._missing_check is not None and self._missing_check.active():
            self._missing_check.cancel()
        self._missing_check = None
        if self._gone_call is not None and self._gone_call.active():
            self._gone_call.cancel()
        self._gone_call = None
        with self._lock:
            self._gone_dirs, self._gone_check_scheduled = set(), False
        observer, self._observer, self._tree = self._observer, None, None
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

    def changed_in_thread(self, generation: int, change: tuple[str, str, str | None]) -> None:
        """Called in watchdog's thread: remember the file's state for a later rescan,
        queue the change, wake the reactor once per batch."""
        path, kind, source = change
        found = stamp(str(self.root / path)) if kind != "deleted" else None
        with self._lock:
            if generation != self._generation:
                return
            if self._rescanning:  # the rescan's listing may be older than this: it keeps this one
                self._touched.add(path)
                if source is not None:
                    self._touched.add(source)
            if source is not None:
                self._index.pop(source, None)
            if found is None:
                self._index.pop(path, None)
            elif path in self._index or len(self._index) < MAX_INDEXED_FILES:
                self._index[path] = found
            self._pending.append(change)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._reactor.callFromThread(self._drain)

    def dir_gone_in_thread(self, generation: int, directory: str) -> None:
        """Called in watchdog's thread: a directory under a watch path was deleted or
        moved away. The files known in it that were not reported gone one by one
        (a move out of the tree reports none) are looked for once the burst of
        such events is over, in one pass, off the reactor."""
        with self._lock:
            if generation != self._generation:
                return
            self._gone_dirs.add(directory.rstrip("/"))
            if self._gone_check_scheduled:
                return
            self._gone_check_scheduled = True
        self._reactor.callFromThread(self._schedule_gone_check, generation)

    def _schedule_gone_check(self, generation: int) -> None:
        if generation == self._generation:
            self._gone_call = self._reactor.callLater(GONE_CHECK_DELAY, self._check_gone, generation)

    def _check_gone(self, generation: int) -> Deferred | None:
        self._gone_call = None
        with self._lock:
            gone, self._gone_dirs = self._gone_dirs, set()
            self._gone_check_scheduled = False
            if generation != self._generation or not gone:
                return None
            candidates = [path for path in self._index if under_any(path, gone)]
        if not candidates:
            return None
        root = self.root

        def missing() -> list[str]:
            return [path for path in candidates if not os.path.lexists(root / path)]

        def report(paths: list[str]) -> None:
            if generation != self._generation or self._debouncer is None or self.plan is None:
                return
            with self._lock:
                for path in paths:
                    self._index.pop(path, None)
            for path in paths:
                entry = next((e for e in self.plan.entries if under_any(path, {e.path})), None)
                if entry is not None and self.plan.admits(entry, path, "deleted"):
                    self.events_received += 1
                    self._debouncer.push((path, "deleted", None), key=next(self._seq))

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), missing).addCallback(report)

    def events_lost_in_thread(self, generation: int) -> None:
        """Called in watchdog's thread: the kernel dropped events (one call per watch)."""
        self._reactor.callFromThread(self._events_lost, generation)

    def _events_lost(self, generation: int) -> None:
        if generation != self._generation or self.plan is None:
            return
        if self._rescanning:
            self._rescan_again = True
            return
        self.events_lost += 1
        self.last_events_lost = self._reactor.seconds()
        self.last_recovered = 0
        self.log.warn("file watcher: the kernel dropped file events (inotify queue overflow); rescanning "
                      "{paths} to find what changed", paths=", ".join(self.plan.paths))
        self._rescan(generation)

    def _rescan(self, generation: int, *, again: bool = False) -> Deferred:
        """Compare the watched trees with what was known; report the differences.
        Every watch reports the same loss, so the reports that arrive during a
        rescan cause one more, which reports only what it finds new."""
        with self._lock:
            self._rescanning, self._rescan_again = True, False
            self._touched = set()
        plan = self.plan
        entries = [e for e in plan.entries if (self.root / e.path).is_dir()] if plan else []
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), index_files, str(self.root),
                              plan, entries)

        def compare(found: dict[str, Stamp]) -> None:
            if generation != self._generation or self._debouncer is None:
                return
            with self._lock:
                # What events reported while the tree was walked is newer than the walk.
                for path in self._touched:
                    if path in self._index:
                        found[path] = self._index[path]
                    else:
                        found.pop(path, None)
                self._touched = set()
                changes = snapshot_diff(self._index, found)
                self._index = found
            self.last_recovered += len(changes)
            self.events_received += len(changes)
            for path, kind in changes:
                self._debouncer.push((path, kind, None), key=next(self._seq))
            if again and not changes:
                return
            self._bus.publish("file:events_lost", {"paths": plan.paths if plan else [], "recovered": len(changes),
                                                   "count": self.events_lost})
            self.log.warn("file watcher: rescan after lost events found {n} change(s)", n=len(changes))

        def failed(failure: Any) -> None:
            self.log.error("file watcher: rescan after lost events failed: {error}", error=str(failure.value))

        def done(_: Any) -> None:
            self._rescanning = False
            if self._rescan_again and generation == self._generation:
                self._rescan(generation, again=True)

        d.addCallbacks(compare, failed)
        d.addBoth(done)
        return d

    def path_gone_in_thread(self, generation: int, path: str) -> None:
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
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), present_files,
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
        # Directories come and go with changes: the count is refreshed then, not
        # by status, which the heartbeat asks of an idle daemon every beat.
        if self.backend == "native" and self._observer is not None:
            self._refresh_watch_count()

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
        elif self.fallback and self._observer is not None:
            issues.append(self.fallback)
        if self.last_events_lost is not None and self._reactor.seconds() - self.last_events_lost < EVENTS_LOST_SHOWN_FOR:
            issues.append(
                f"file watcher: the kernel dropped file events at {iso_utc(self.last_events_lost)} (inotify queue "
                f"overflow, {self.events_lost} time(s) since start); a rescan found {self.last_recovered} change(s). "
                "If it recurs, raise fs.inotify.max_queued_events or watch fewer paths"
            )
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
        if self.degraded or self.fallback:
            status["degraded"] = self.degraded or self.fallback
        if self.events_lost:
            status["events_lost"] = {"count": self.events_lost, "last": iso_utc(self.last_events_lost),
                                     "recovered": self.last_recovered}
        if self.error:
            status["error"] = self.error
        return status
