# tests: tests/daemon/test_watcher.py
"""The files a watch would report, found by walking its trees (in a pool thread,
never on the reactor, ignored trees not entered): the index a rescan after lost
kernel events compares with, and the files of a watch path that reappears."""

from __future__ import annotations

import os
from typing import Iterator

from aiwg.core.text import display_path
from aiwg.core.watching import Stamp, WatchEntry, WatchPlan

#: Files whose state is remembered for a rescan after lost events; beyond this a
#: rescan can tell only what it finds, not what changed.
MAX_INDEXED_FILES = 200_000


def under_any(path: str, directories: set[str]) -> bool:
    """Is the project-relative `path` at or below one of `directories` ('' is the root)?"""
    if "" in directories:
        return True
    parts = path.split("/")
    return any("/".join(parts[:i]) in directories for i in range(1, len(parts)))


def stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def admitted_files(root: str, plan: WatchPlan, entries: list[WatchEntry], kinds: tuple[str, ...]
                    ) -> Iterator[tuple[str, str]]:
    """In a pool thread: (project-relative, absolute) for every file under `entries`
    that the watch would report as one of `kinds`, ignored trees not entered."""
    prefix = root.rstrip("/") + "/"
    for entry in entries:
        for top, dirs, files in os.walk(os.path.join(root, entry.path)):
            relative_top = top[len(prefix):] if top.startswith(prefix) else ""
            dirs[:] = [d for d in dirs if not plan.ignore.ignores_dir(os.path.join(relative_top, d))]
            for name in files:
                relative = display_path(os.path.join(relative_top, name))
                if any(plan.admits(entry, relative, kind) for kind in kinds):
                    yield relative, os.path.join(top, name)


def index_files(root: str, plan: WatchPlan | None, entries: list[WatchEntry]) -> dict[str, Stamp]:
    """In a pool thread: the state of every file the watch would report; what a
    rescan after lost events compares with."""
    index: dict[str, Stamp] = {}
    if plan is None:
        return index
    for relative, path in admitted_files(root, plan, entries, ("modified", "created")):
        found = stamp(path)
        if found is not None:
            index[relative] = found
            if len(index) >= MAX_INDEXED_FILES:
                break
    return index


#: At most this many files are reported for a watch path that appears.
MAX_PRESENT_FILES = 10_000


def present_files(root: str, plan: WatchPlan, entries: list[WatchEntry]) -> list[str]:
    """In a pool thread: the files under `entries` that the watch would report as
    created (a watch path that appeared)."""
    found: list[str] = []
    for relative, _ in admitted_files(root, plan, entries, ("created",)):
        found.append(relative)
        if len(found) >= MAX_PRESENT_FILES:
            break
    return found
