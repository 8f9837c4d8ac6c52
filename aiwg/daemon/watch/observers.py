# tests: tests/daemon/test_observers.py, tests/daemon/test_watcher.py
"""Kernel watches that leave ignored trees out, through watchdog's public API only.

watchdog's recursive inotify watch adds one kernel watch per directory below its
path, `node_modules/` included. It has no public way to skip a subtree, so a
`TreeWatch` schedules several watches instead (`core.watching.watch_cover`): one
recursive watch for each subtree with nothing to leave out, and a watch of its own
entries for each directory above an ignored tree. It then keeps that cover true
as directories come and go below those flat watches. Nothing here reaches into
watchdog's private state: an earlier design subclassed its inotify watch group,
and watchdog 7.1.1 reshaped that group so that every file event was silently lost.

Whether the watches really deliver is proved by behaviour, not assumed: `probe`
makes changes in a scratch tree watched through the same observer and waits for
them. The watcher falls back to the stock recursive watch, then to polling, when a
probe fails.

The polling observer gets the same pruning through its public `listdir` hook.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from typing import Any, Callable, Iterator

from twisted.logger import Logger

from aiwg.core.watching import watch_cover

log = Logger()

Ignored = Callable[[str], bool]  # absolute directory path → leave it (and all below) out?
LimitHit = Callable[[OSError], None]

LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)
#: Seconds a probe waits for its own changes to arrive: they take milliseconds,
#: but a machine busy at start-up must not pass for a broken watchdog.
PROBE_TIMEOUT = 10.0


def watched_event_classes() -> list[Any]:
    """The event classes the watches ask for: file changes, the directory changes
    that keep a cover true, and lost events (a kernel queue overflow)."""
    from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, EventsLostEvent,
                                 FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent)

    return [FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent,
            DirCreatedEvent, DirDeletedEvent, DirMovedEvent, EventsLostEvent]


def watchdog_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("watchdog")
    except PackageNotFoundError:
        return "unknown"


def native_observer() -> Any:
    """The platform's native observer (inotify on Linux)."""
    from watchdog.observers import Observer

    return Observer()


def polling_observer(ignored: Ignored, interval: float) -> Any:
    from watchdog.observers.polling import PollingObserverVFS

    def listdir(path: Any) -> Iterator[os.DirEntry]:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and ignored(entry.path):
                    continue
                yield entry

    return PollingObserverVFS(stat=os.stat, listdir=listdir, polling_interval=interval)


def path_text(path: Any) -> str:
    """A path watchdog reports (str, or bytes for a name that is not UTF-8) as text."""
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else str(path)


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:  # gone, or unreadable: nothing below to watch
        return []


class _Router:
    """The handler of every watch of one tree: keeps the cover true, then passes
    the event on. Runs in watchdog's dispatch thread."""

    def __init__(self, tree: "TreeWatch", top: str, handler: Any, ignored: Ignored) -> None:
        self.tree = tree
        self.top = top
        self.handler = handler
        self.ignored = ignored

    def dispatch(self, event: Any) -> None:
        """Never raises: an exception here would end watchdog's dispatch thread, and
        with it every later event."""
        try:
            if event.is_directory and self.tree.prunes:
                for extra in self.tree.follow(self, event):
                    self.handler.dispatch(extra)
            self.handler.dispatch(event)
        except OSError as exc:
            if exc.errno in LIMIT_ERRNOS and self.tree.on_limit is not None:
                self.tree.on_limit(exc)  # the watcher falls back to polling
            else:
                log.failure("file watcher: handling {event}", event=event)
        except Exception:
            log.failure("file watcher: handling {event}", event=event)


class TreeWatch:
    """The watches of one observer, scheduled as the cover of each watched tree.

    With `prunes` false it is the stock arrangement: one recursive watch per tree,
    ignored trees included (their events are filtered by the handler).
    """

    def __init__(self, observer: Any, *, prunes: bool, on_limit: LimitHit | None = None) -> None:
        self.observer = observer
        self.prunes = prunes
        self.on_limit = on_limit  # called (in watchdog's thread) when a kernel limit stops a new watch
        self._lock = threading.RLock()
        self._watches: dict[str, Any] = {}  # directory → ObservedWatch
        self._flat: set[str] = set()  # directories watched for their own entries only
        self._routers: dict[str, _Router] = {}

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def add(self, top: str, handler: Any, ignored: Ignored) -> None:
        """Watch the tree at `top` (walks it: not on the reactor). Raises the
        OSError of a watch that cannot be added for `top` itself."""
        top = os.path.abspath(top)
        router = _Router(self, top, handler, ignored)
        with self._lock:
            self._routers[top] = router
            self._grow(router, top)

    def remove(self, top: str) -> None:
        top = os.path.abspath(top)
        with self._lock:
            self._routers.pop(top, None)
            self._shrink(top)

    def _grow(self, router: _Router, directory: str) -> None:
        if self.prunes:
            cover = watch_cover(directory, _subdirs, router.ignored)
        else:
            cover = [(directory, True)]
        events = watched_event_classes()
        for path, recursive in cover:
            if path in self._watches:
                continue
            try:
                watch = self.observer.schedule(router, path, recursive=recursive, event_filter=events)
            except OSError as exc:
                if path == directory or exc.errno in LIMIT_ERRNOS:
                    raise
                continue  # a directory that vanished while the tree was walked
            self._watches[path] = watch
            if not recursive:
                self._flat.add(path)

    def _shrink(self, directory: str) -> None:
        prefix = directory.rstrip("/") + "/"
        for path in [p for p in self._watches if p == directory or p.startswith(prefix)]:
            watch = self._watches.pop(path)
            self._flat.discard(path)
            try:
                self.observer.unschedule(watch)
            except KeyError:  # already gone with its directory
                pass

    def follow(self, router: _Router, event: Any) -> list[Any]:
        """A directory event: keep the cover true. Returns events to report first:
        a directory moved away from under a flat watch as deleted (nothing else
        reports the files it held), and created-file events for what a directory
        new under a flat watch already holds (it may have been filled before its
        watch was added: `mkdir -p a/b && touch a/b/c`)."""
        from watchdog.events import DirDeletedEvent, FileCreatedEvent

        kind = event.event_type
        source = path_text(event.src_path).rstrip("/")
        arrived: str | None = None
        extra: list[Any] = []
        with self._lock:
            if kind == "deleted":
                # Only if it is gone: a late delete from the watch of a directory made
                # again since (`rm -rf d && mkdir d`) must not take the new watch away.
                if source in self._watches and not os.path.isdir(source):
                    self._shrink(source)
                return []
            if kind == "moved":
                if os.path.dirname(source) in self._flat:
                    extra.append(DirDeletedEvent(source))
                self._shrink(source)
                destination = path_text(event.dest_path).rstrip("/")
                if os.path.dirname(destination) in self._flat:
                    arrived = destination
            elif kind == "created" and os.path.dirname(source) in self._flat:
                arrived = source
            if arrived is not None and arrived in self._watches:
                # A directory made (or moved in) is a new one: a watch of that path is on
                # one deleted since (its delete may not have come yet, and inode numbers
                # are reused): watch it anew.
                self._shrink(arrived)
            if arrived is None or router.ignored(arrived) or arrived in self._watches \
                    or os.path.islink(arrived) or not os.path.isdir(arrived):
                return extra
            try:
                self._grow(router, arrived)
            except OSError as exc:
                if exc.errno in LIMIT_ERRNOS:
                    raise
                return extra  # gone again already
        return [*extra, *(FileCreatedEvent(path) for path in _files_below(arrived, router.ignored))]


def _files_below(top: str, ignored: Ignored) -> list[str]:
    found = []
    for directory, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not ignored(os.path.join(directory, d))]
        found.extend(os.path.join(directory, name) for name in filenames)
    return found


class _ProbeHandler:
    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.seen: set[str] = set()
        self.done = threading.Event()

    def dispatch(self, event: Any) -> None:
        if event.is_directory or event.event_type not in ("created", "modified", "moved"):
            return
        path = path_text(event.dest_path if event.event_type == "moved" else event.src_path)
        if path in self.expected:
            self.seen.add(path)
            if self.seen >= self.expected:
                self.done.set()


def probe(tree: TreeWatch, directory: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Make changes in a scratch tree watched through `tree`'s running observer and
    wait for them: None when every one arrived, else what did not. The scratch
    tree has an ignored subtree, so a pruning TreeWatch gives it a flat watch and a
    recursive one, and a directory made during the probe must be followed."""
    directory = os.path.abspath(directory)
    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.makedirs(os.path.join(directory, "skip", "inner"))
        os.makedirs(os.path.join(directory, "deep", "er"))
    except OSError as exc:  # a full disk, say: that says nothing of the watches
        shutil.rmtree(directory, ignore_errors=True)
        return f"the probe could not make its scratch tree in {directory}: {exc.strerror or exc}"
    targets = {
        "a file in a flat-watched directory": os.path.join(directory, "flat.txt"),
        "a file in a recursively watched tree": os.path.join(directory, "deep", "er", "deep.txt"),
        "a file in a directory made after the watch": os.path.join(directory, "fresh", "new.txt"),
    }
    handler = _ProbeHandler(set(targets.values()))
    skip = os.path.join(directory, "skip")
    try:
        tree.add(directory, handler, lambda path: path == skip)  # a kernel limit raises from here
        try:
            for path in targets.values():
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write("probe\n")
        except OSError as exc:
            return f"the probe could not write its files in {directory}: {exc.strerror or exc}"
        if handler.done.wait(timeout):
            return None
        missing = [what for what, path in targets.items() if path not in handler.seen]
        return f"no event within {timeout:g} s for {', '.join(missing)}"
    finally:
        tree.remove(directory)
        shutil.rmtree(directory, ignore_errors=True)
