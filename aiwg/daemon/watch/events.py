# tests: tests/daemon/test_watcher.py
"""watchdog's raw events, in watchdog's thread, made into the project-relative
changes the watcher reports: `(path, kind, moved-from)`, with what `watch.ignore`
and the watch entry's own filters exclude dropped before it crosses threads."""

from __future__ import annotations

from typing import Any, Protocol

from aiwg.core.text import display_path
from aiwg.core.watching import WatchEntry, WatchPlan
from aiwg.daemon.watch.observers import path_text

WATCH_KINDS = ("created", "modified", "deleted", "moved")


class ThreadSink(Protocol):
    """Where a Translator hands what it found (the FileWatcher): each call runs in
    watchdog's thread and must only hand over to the reactor. `generation`: the
    watch that saw it (a stale one's calls are dropped)."""

    def changed_in_thread(self, generation: int, change: tuple[str, str, str | None]) -> None: ...
    def dir_gone_in_thread(self, generation: int, directory: str) -> None: ...
    def path_gone_in_thread(self, generation: int, path: str) -> None: ...
    def events_lost_in_thread(self, generation: int) -> None: ...


class Translator:
    """Runs in watchdog's thread: raw event → filtered, project-relative change."""

    def __init__(self, watcher: ThreadSink, root: str, plan: WatchPlan, entry: WatchEntry, generation: int) -> None:
        self._watcher = watcher
        self._prefix = root.rstrip("/") + "/"
        self._top = (self._prefix + entry.path).rstrip("/")
        self._plan = plan
        self._entry = entry
        self._generation = generation

    def dispatch(self, event: Any) -> None:
        if event.event_type == "events_lost":
            self._watcher.events_lost_in_thread(self._generation)
            return
        if event.is_directory:
            if event.event_type == "deleted":
                path = path_text(event.src_path).rstrip("/")
                if path == self._top:
                    self._watcher.path_gone_in_thread(self._generation, self._entry.path or ".")
                elif (relative := self._relative(path)) is not None:
                    self._watcher.dir_gone_in_thread(self._generation, relative)
            return
        if event.event_type not in WATCH_KINDS:
            return
        src = self._relative(event.src_path)
        if event.event_type == "moved":
            dest = self._relative(event.dest_path)
            src_ok = src is not None and self._admits(src, "deleted")
            dest_ok = dest is not None and self._admits(dest, "moved")
            if src_ok and dest_ok:
                self._watcher.changed_in_thread(self._generation, (dest, "moved", src))
            elif dest_ok:
                self._watcher.changed_in_thread(self._generation, (dest, "created", None))
            elif src_ok:
                self._watcher.changed_in_thread(self._generation, (src, "deleted", None))
            return
        if src is not None and self._admits(src, event.event_type):
            self._watcher.changed_in_thread(self._generation, (src, event.event_type, None))

    def _relative(self, path: Any) -> str | None:
        text = path_text(path)
        if not text.startswith(self._prefix):
            return None
        return display_path(text[len(self._prefix):])  # a name that is not UTF-8: `bad\xff.txt`

    def _admits(self, relative: str, kind: str) -> bool:
        return self._plan.admits(self._entry, relative, kind)
