"""`aiwg daemon list`: every daemon of the user, from a registry a crashed daemon
cannot leave stale."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from aiwg.registry import REGISTRY_ENV
from tests.conftest import Project, wait_for

pytestmark = pytest.mark.e2e


def listed(project: Project) -> list[dict]:
    result = project.aiwg("daemon", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["daemons"]


def test_list_shows_each_running_daemon_and_forgets_one_that_died(project: Project, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    project.env[REGISTRY_ENV] = str(registry)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = Project(other_root, tmp_path / "run")
    other.env = dict(project.env)
    project.start()
    other.start()
    other.aiwg("task", "submit", "a while @sleep:4", check=True)
    both = wait_for(lambda: len(found := listed(project)) == 2 and all(d["responding"] for d in found) and found)
    by_project = {d["project"]: d for d in both}
    mine, theirs = by_project[str(project.root)], by_project[str(other_root)]
    assert mine["pid"] == project.pid() and theirs["pid"] == other.pid()
    assert mine["health"] in ("healthy", "degraded") and isinstance(mine["uptime_seconds"], int)
    wait_for(lambda: next(d for d in listed(project) if d["project"] == str(other_root))["running"] == 1)
    text = project.aiwg("daemon", "list")
    assert text.stdout.splitlines()[0].split() == ["PROJECT", "PID", "UPTIME", "RUNNING", "QUEUED", "HEALTH"]
    assert str(other_root) in text.stdout and str(project.root) in text.stdout

    [agent] = [t for t in json.loads(other.aiwg("task", "list", "--json").stdout) if t["state"] == "running"]
    os.kill(other.pid(), signal.SIGKILL)  # no chance to remove its entry
    wait_for(lambda: not other.running())
    try:  # and its agent, orphaned by the kill, goes too
        os.killpg(agent["pgid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert [d["project"] for d in listed(project)] == [str(project.root)]
    assert len(list(registry.glob("*.json"))) == 1  # the stale entry went with the look

    project.aiwg("daemon", "stop", check=True)
    assert listed(project) == []
    assert project.aiwg("daemon", "list").stdout.strip() == "No aiwg daemon is running (for this user)."
    other.kill_everything()
