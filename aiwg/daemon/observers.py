# tests: tests/daemon/test_watcher.py
"""watchdog observers that never descend into ignored trees, and that tell us when
the kernel's inotify limits are hit.

watchdog's inotify backend adds one kernel watch per directory below a watched
path, `node_modules/` included, and quietly drops the errors for all but the top
directory — so a project over `fs.inotify.max_user_watches` would look watched
while half of it is not. The watch group below skips ignored directories and
reports ENOSPC/EMFILE. It leans on watchdog's watch-group internals (pinned in
pyproject.toml); if they ever change shape we fall back to the stock observer,
which watches more but still works, and say so.

The polling observer gets the same pruning through its `listdir` hook.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, Iterator

from twisted.logger import Logger

log = Logger()

Prune = Callable[[str], bool]  # absolute directory path → skip it and all below?
LimitHit = Callable[[OSError], None]

LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)


def native_observer(prune: Prune, on_limit: LimitHit) -> tuple[Any, bool]:
    """An inotify observer (or the platform's native one); the flag says whether
    ignored trees are pruned from the kernel watches."""
    try:
        from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
    except ImportError:  # not Linux: the platform's own observer, events filtered later
        from watchdog.observers import Observer

        return Observer(), False
    observer = InotifyObserver()
    try:
        group = _pruned_group(InotifyWatchGroup, prune, on_limit)
        emitter = _emitter_with_group(InotifyEmitter, group)
        if not hasattr(observer, "_emitter_class"):
            raise AttributeError("_emitter_class")
        observer._emitter_class = emitter
    except (AttributeError, TypeError) as exc:
        log.warn(
            "file watcher: this watchdog version cannot skip ignored directories ({error}); "
            "they are watched but their events are dropped",
            error=str(exc),
        )
        return observer, False
    return observer, True


def polling_observer(prune: Prune, interval: float) -> Any:
    from watchdog.observers.polling import PollingObserverVFS

    def listdir(path: Any) -> Iterator[os.DirEntry]:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and prune(entry.path):
                    continue
                yield entry

    return PollingObserverVFS(stat=os.stat, listdir=listdir, polling_interval=interval)


def _pruned_group(base: Any, prune: Prune, on_limit: LimitHit) -> Any:
    for name in ("_add_all_callbacks", "_add_callback", "_inotify_fd", "_callback", "_id"):
        if name not in dir(base) and name not in getattr(base, "__dataclass_fields__", {}):
            raise AttributeError(name)

    class PrunedWatchGroup(base):  # type: ignore[misc, valid-type]
        def _add_all_callbacks(self, path: bytes) -> None:
            if path != self.path and prune(os.fsdecode(path)):
                return
            is_dir = os.path.isdir(path)
            self._add_callback(path)
            if not (is_dir and self.is_recursive):
                return
            for top, dirnames, _ in os.walk(path, followlinks=self.follow_symlink):
                kept = []
                for dirname in dirnames:
                    full = os.path.join(top, dirname)
                    if prune(os.fsdecode(full)):
                        continue
                    if not self.follow_symlink and os.path.islink(full):
                        continue
                    kept.append(dirname)
                    self._add_callback(full)
                dirnames[:] = kept

        def _add_callback(self, path: bytes) -> None:
            if path in self._active_callbacks_by_path:
                return  # a new directory seen both by its event and by a walk
            try:
                wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
            except OSError as exc:
                if exc.errno in LIMIT_ERRNOS:
                    on_limit(exc)
                if path == self.path:
                    raise
                return  # a directory that vanished mid-walk
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path

    return PrunedWatchGroup


def _emitter_with_group(base: Any, group: Any) -> Any:
    class PrunedEmitter(base):  # type: ignore[misc, valid-type]
        def on_thread_start(self) -> None:
            self._inotify = group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    return PrunedEmitter
