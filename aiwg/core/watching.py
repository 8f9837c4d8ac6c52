# tests: tests/core/test_watching.py
"""What the file watcher watches, and how a burst of raw changes becomes one summary.

Pure: the watcher service turns watchdog's events into `(path, kind, source)`
tuples of project-relative paths and feeds them here; nothing here touches the
file system or a clock.

A `ChangeSet` keeps one entry per path with the net effect of the burst: a file
created then modified is `created`; created then deleted never happened; deleted
then created is `modified`; a temporary file renamed over a real one (an editor's
atomic save) is the real one `modified`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping

from attrs import frozen

from aiwg.core.globs import IgnoreSet

KINDS = ("created", "modified", "deleted", "moved")
#: `watch.paths[].events` names → change kinds.
EVENT_NAMES = {"create": "created", "modify": "modified", "delete": "deleted", "move": "moved"}

#: At most this many changes are listed in one `file:changed` event (the count is exact).
MAX_LISTED_CHANGES = 1000
#: A ChangeSet stops tracking new paths beyond this (a checkout of a huge tree);
#: it still counts them.
MAX_TRACKED_PATHS = 100_000


@frozen
class WatchEntry:
    """One `watch.paths` entry, resolved: `path` is project-relative ('' is the root)."""

    path: str
    kinds: frozenset[str] = frozenset(KINDS)
    extensions: tuple[str, ...] = ()
    ignore: IgnoreSet | None = None

    def admits(self, relative: str, kind: str) -> bool:
        """Does this entry's own filter (events, extensions, ignore) let the change through?"""
        if kind not in self.kinds:
            return False
        if self.extensions and not relative.endswith(self.extensions):
            return False
        return self.ignore is None or not self.ignore.ignores(relative)


@frozen
class WatchPlan:
    entries: tuple[WatchEntry, ...]
    ignore: IgnoreSet
    debounce_seconds: float
    use_polling: bool

    @property
    def paths(self) -> list[str]:
        return [entry.path or "." for entry in self.entries]

    def admits(self, entry: WatchEntry, relative: str, kind: str) -> bool:
        """Is this change under `entry` reported: not ignored by `watch.ignore`, and
        let through by the entry's own filter?"""
        return not self.ignore.ignores(relative) and entry.admits(relative, kind)


def plan_from_config(section: Mapping[str, Any]) -> WatchPlan:
    """The plan for a validated `watch` section. No paths means the whole project;
    a path inside another watched path is dropped (its parent covers it)."""
    raw = section.get("paths") or ["."]
    entries: list[WatchEntry] = []
    for item in raw:
        spec = {"path": item} if isinstance(item, str) else dict(item)
        path = _normalise(spec["path"])
        kinds = frozenset(EVENT_NAMES[e] for e in spec["events"]) if "events" in spec else frozenset(KINDS)
        extensions = tuple(e if e.startswith(".") else "." + e for e in spec.get("extensions") or ())
        ignore = IgnoreSet(spec["ignore"]) if spec.get("ignore") else None
        entries.append(WatchEntry(path=path, kinds=kinds, extensions=extensions, ignore=ignore))
    kept = [e for e in entries if not any(_inside(e.path, other.path) for other in entries if other is not e)]
    unique: dict[str, WatchEntry] = {}
    for entry in kept:
        unique.setdefault(entry.path, entry)
    return WatchPlan(
        entries=tuple(unique.values()),
        ignore=IgnoreSet(list(section.get("ignore") or [])),
        debounce_seconds=int(section.get("debounce_ms", 1000)) / 1000.0,
        use_polling=bool(section.get("use_polling", False)),
    )


def _normalise(path: str) -> str:
    """'./src/' → 'src'; '.' → ''. Paths stay project-relative (config validation
    does not allow escaping the project, and neither does this)."""
    cleaned = os.path.normpath(path.strip()).replace(os.sep, "/")
    if cleaned in (".", ""):
        return ""
    if cleaned.startswith("/") or cleaned == ".." or cleaned.startswith("../"):
        raise ValueError(f"watch path '{path}' is outside the project")
    return cleaned


def _inside(path: str, parent: str) -> bool:
    if path == parent:
        return False
    return parent == "" or path.startswith(parent + "/")


def watch_path_problem(path: str) -> str | None:
    try:
        _normalise(path)
    except ValueError as exc:
        return str(exc)
    return None


@frozen
class Change:
    path: str
    kind: str
    source: str | None = None  # for `moved`: where it came from

    def to_json(self) -> dict[str, str]:
        out = {"path": self.path, "kind": self.kind}
        if self.source is not None:
            out["from"] = self.source
        return out

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.source is None else (self.path, self.source)


class ChangeSet:
    """The net effect of a burst of changes, one entry per path, in first-seen order."""

    def __init__(self) -> None:
        self._changes: dict[str, Change] = {}
        self.raw = 0
        self.untracked = 0

    def __len__(self) -> int:
        return len(self._changes) + self.untracked

    def add(self, path: str, kind: str, source: str | None = None) -> None:
        self.raw += 1
        if kind == "moved" and source is not None:
            self._moved(path, source)
            return
        previous = self._changes.get(path)
        merged = _merge(previous.kind if previous else None, kind)
        if merged is None:
            self._changes.pop(path, None)
        elif previous is None:
            self._track(Change(path, merged))
        elif merged != previous.kind:
            self._changes[path] = Change(path, merged, previous.source if merged == "moved" else None)

    def _moved(self, path: str, source: str) -> None:
        before = self._changes.pop(source, None)
        if before is not None and before.kind == "created":
            kind, origin = "modified", None  # a new temp file renamed into place
        elif before is not None and before.kind == "moved":
            kind, origin = "moved", before.source
        else:
            kind, origin = "moved", source
        if origin == path:
            kind, origin = "modified", None  # moved away and back
        self._changes.pop(path, None)
        self._track(Change(path, kind, origin))

    def _track(self, change: Change) -> None:
        if len(self._changes) >= MAX_TRACKED_PATHS:
            self.untracked += 1
            return
        self._changes[change.path] = change

    def changes(self) -> list[Change]:
        return list(self._changes.values())

    def payload(self, limit: int = MAX_LISTED_CHANGES) -> dict[str, Any]:
        """The `file:changed` payload: the changes (at most `limit` listed), their
        paths, and the exact count."""
        listed = self.changes()[:limit]
        return {
            "changes": [c.to_json() for c in listed],
            "paths": [c.path for c in listed],
            "count": len(self),
            "truncated": len(self) > len(listed),
        }


def _merge(before: str | None, after: str) -> str | None:
    """The net kind of `before` then `after` on one path; None: nothing happened."""
    if before is None:
        return after
    if before == "created":
        return None if after == "deleted" else "created"
    if before == "deleted":
        return "deleted" if after == "deleted" else "modified"
    if after == "deleted":
        return "deleted"
    if before == "moved":
        return "moved"
    return "modified" if after in ("modified", "created") else after


def changes_from_payload(payload: Mapping[str, Any]) -> list[Change]:
    """The changes listed in a `file:changed` payload (for rules reading the event)."""
    out = []
    for item in payload.get("changes") or ():
        if isinstance(item, Mapping) and isinstance(item.get("path"), str):
            out.append(Change(item["path"], str(item.get("kind", "modified")), item.get("from")))
    return out


def matching_paths(pattern_matches: Any, changes: Iterable[Change]) -> list[str]:
    """Paths of the changes a rule's pattern matches (a move matches on either end)."""
    out: list[str] = []
    for change in changes:
        if any(pattern_matches(p) for p in change.paths):
            out.append(change.path)
    return out


# -- which kernel watches cover a tree -------------------------------------------

#: A directory → its subdirectories (absolute paths, symbolic links left out).
Subdirs = Callable[[str], list[str]]


def watch_cover(top: str, subdirs: Subdirs, ignored: Callable[[str], bool]) -> list[tuple[str, bool]]:
    """The watches, `(directory, recursive)`, that see every change under `top`
    while keeping ignored trees (node_modules/, .git/) out of the kernel.

    A subtree with nothing to leave out is one recursive watch; a directory with
    an ignored tree somewhere below gets a watch of its own entries only, and the
    same question is asked of each of its subdirectories that is not ignored.
    An ignored directory with no subdirectories of its own (`__pycache__/`) is
    not worth leaving out: splitting a recursive watch around it costs more
    watches than it saves, so it is watched and its events are filtered.
    """
    # Post-order over the tree without recursion (deep trees exist).
    children: dict[str, list[str]] = {}
    skipped: dict[str, bool] = {}
    stack = [top]
    order: list[str] = []
    while stack:
        directory = stack.pop()
        order.append(directory)
        kept = []
        for child in subdirs(directory):
            if ignored(child) and subdirs(child):
                skipped[directory] = True
                continue
            kept.append(child)
        children[directory] = kept
        stack.extend(kept)
    clean: dict[str, bool] = {}
    for directory in reversed(order):
        clean[directory] = not skipped.get(directory) and all(clean[c] for c in children[directory])
    cover: list[tuple[str, bool]] = []
    stack = [top]
    while stack:
        directory = stack.pop()
        if clean[directory]:
            cover.append((directory, True))
            continue
        cover.append((directory, False))
        # Under a watch of its own entries, an ignored leaf needs no watch at all.
        stack.extend(c for c in reversed(children[directory]) if not ignored(c))
    return cover


# -- what a rescan finds changed -------------------------------------------------

#: A file's identity for change detection: (mtime in ns, size, inode).
Stamp = tuple[int, int, int]


def snapshot_diff(before: Mapping[str, Stamp], after: Mapping[str, Stamp]) -> list[tuple[str, str]]:
    """`(path, kind)` for what differs between two listings of the same tree,
    sorted by path: what a rescan after lost events reports, once."""
    changes = [(path, "deleted") for path in before if path not in after]
    for path, stamp in after.items():
        old = before.get(path)
        if old is None:
            changes.append((path, "created"))
        elif old != stamp:
            changes.append((path, "modified"))
    return sorted(changes)
