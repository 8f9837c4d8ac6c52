# tests: tests/daemon/test_iterations.py
"""A loop's per-iteration records on disk, under
`.aiwg/daemon/actions/<task-id>/iterations/NNN/`: `prompt.md` (what the agent
was told), `agent.log` and `check.log` (their output), and `record.json` (exit
statuses, cost, duration, git snapshots before and after). Plain files, so a
person can read what each attempt did without the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from aiwg.daemon.statefile import write_json_atomic

RECORD = "record.json"
PROMPT = "prompt.md"
AGENT_LOG = "agent.log"
CHECK_LOG = "check.log"
#: A git status longer than this is cut in the record (the work tree has it all).
STATUS_LIMIT = 64 * 1024


class IterationRecords:
    def __init__(self, actions_dir: Path) -> None:
        self.actions_dir = Path(actions_dir)

    def task_dir(self, task_id: str) -> Path:
        return self.actions_dir / task_id

    def dir(self, task_id: str, iteration: int) -> Path:
        return self.task_dir(task_id) / "iterations" / f"{iteration:03d}"

    def begin(self, task_id: str, iteration: int, prompt: str) -> Path:
        """A fresh directory for the iteration with its prompt in it. An attempt at
        the same iteration that a daemon stop interrupted is replaced."""
        where = self.dir(task_id, iteration)
        if where.exists():
            shutil.rmtree(where, ignore_errors=True)
        for level in (self.task_dir(task_id), where.parent, where):  # each owner-only, like the rest
            level.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(where / PROMPT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(prompt)
        return where

    def write(self, task_id: str, iteration: int, record: dict[str, Any]) -> None:
        write_json_atomic(self.dir(task_id, iteration) / RECORD, record)

    def read_all(self, task_id: str) -> list[dict[str, Any]]:
        """The records in iteration order; an iteration without a record yet (it is
        running, or the daemon died in it) is left out."""
        base = self.task_dir(task_id) / "iterations"
        try:
            names = sorted((n for n in os.listdir(base) if n.isdigit()), key=int)
        except FileNotFoundError:
            return []
        records = []
        for name in names:
            try:
                with open(base / name / RECORD, encoding="utf-8") as handle:
                    record = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def remove(self, task_id: str) -> None:
        shutil.rmtree(self.task_dir(task_id), ignore_errors=True)


def snapshot_json(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """A git snapshot as a record keeps it: the status as a list of lines, cut if huge."""
    if snapshot is None:
        return None
    status = snapshot.get("status") or ""
    cut = len(status) > STATUS_LIMIT
    lines = status[:STATUS_LIMIT].splitlines()
    out: dict[str, Any] = {"head": snapshot.get("head"), "status": lines}
    if cut:
        out["statusTruncated"] = True
    return out
