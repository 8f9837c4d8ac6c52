# tests: tests/e2e/test_tasks.py, tests/e2e/test_lifecycle.py
"""Reading Linux's /proc: process state, start time, children, and the task marker
in a process's environment. Stdlib only (the CLI uses it); every reader answers
None or empty where /proc is missing (macOS) or the process is gone."""

from __future__ import annotations

import os
from pathlib import Path

#: Set in every agent's environment; lets the daemon find a task's processes,
#: even ones that left its process group.
TASK_MARKER = "AIWG_TASK_ID"


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name: [0] is the state
    (b"Z" for a zombie), [19] the start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def task_marker(pid: int) -> str | None:
    """The AIWG_TASK_ID in this process's environment, if it has one (and we may read it)."""
    prefix = f"{TASK_MARKER}=".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            entries = handle.read().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return None


def all_pids() -> list[int]:
    try:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def own_children() -> set[int]:
    """This process's direct children, from /proc/self/task/*/children."""
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as handle:
                pids.update(int(p) for p in handle.read().split())
        except (OSError, ValueError):
            continue
    return pids


def inotify_watch_count(pid: int | str = "self") -> int | None:
    """Kernel inotify watches held by a process (what counts against
    fs.inotify.max_user_watches); None where /proc cannot tell."""
    base = Path(f"/proc/{pid}")
    total, seen = 0, False
    try:
        fds = list((base / "fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            text = (base / "fdinfo" / fd.name).read_text()
        except OSError:
            continue
        seen = True
        total += sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))
    return total if seen else 0
