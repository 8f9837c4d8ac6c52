# tests: tests/e2e/test_daemon_list.py
"""The user's running daemons, one small file each, for `aiwg daemon list` (as
`pm2 ls` or `supervisorctl status` list theirs).

A daemon writes its entry once it holds its project's lock and removes it when it
stops. A daemon that crashed cannot remove its own, so an entry is believed only
while its pid is alive and holds that project's lock; a reader removes the others.
The directory is per user and outlives no reboot's worth of truth: each entry is
checked against the lock anyway. No Twisted here: the CLI reads it too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from aiwg import instance
from aiwg.paths import ProjectPaths

#: Overrides where the entries are kept (tests; several users of one account).
REGISTRY_ENV = "AIWG_REGISTRY_DIR"


def registry_dir() -> Path:
    """`$AIWG_REGISTRY_DIR`, else `$XDG_STATE_HOME/aiwg/daemons` (~/.local/state)."""
    override = os.environ.get(REGISTRY_ENV)
    if override:
        return Path(override)
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "aiwg" / "daemons"


def _entry_path(root: Path) -> Path:
    return registry_dir() / (hashlib.sha256(os.fsencode(root)).hexdigest()[:16] + ".json")


def register(paths: ProjectPaths, pid: int, socket: Path, started_at: float) -> None:
    """Add this daemon (atomically: a reader never sees half an entry)."""
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = _entry_path(paths.root)
    scratch = target.with_name(f".{target.name}.{pid}")
    scratch.write_text(json.dumps({"project": str(paths.root), "pid": pid, "socket": str(socket),
                                   "started_at": started_at}))
    os.replace(scratch, target)


def unregister(paths: ProjectPaths, pid: int) -> None:
    """Remove this daemon's entry, if it is still this daemon's."""
    target = _entry_path(paths.root)
    try:
        if json.loads(target.read_text()).get("pid") == pid:
            target.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def running() -> list[dict[str, Any]]:
    """The entries of daemons that run now, by project; stale ones are removed."""
    found = []
    try:
        names = sorted(os.listdir(registry_dir()))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = registry_dir() / name
        try:
            entry = json.loads(path.read_text())
            project = ProjectPaths(Path(entry["project"]))
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            _remove(path)
            continue
        if not instance.pid_alive(pid) or instance.holder(project) != pid:
            _remove(path)  # it died without a word, or another daemon took the project since
            continue
        found.append(entry)
    return sorted(found, key=lambda e: str(e["project"]))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
