"""A project on a file system that fills up (a small tmpfs, where the test may
mount one): the daemon keeps running, a refused submit never runs later, an agent
whose output cannot be written runs on, and the health says why while it lasts."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from aiwg.errors import STORE_UNWRITABLE, RpcError
from tests.conftest import Project, install_fake_claude, wait_for

pytestmark = pytest.mark.e2e

DISK_MB = 16


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture
def project_on_disk(small_disk: Path, tmp_path: Path) -> Iterator[Project]:
    root = small_disk / "proj"
    root.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    project = Project(root, runtime)
    project.fake = install_fake_claude(tmp_path)
    project.env["PATH"] = f"{project.fake.bin_dir}:{project.env.get('PATH', os.defpath)}"
    project.env["FAKE_CLAUDE_RECORDS"] = str(project.fake.records)
    project.write_config(json.dumps({"daemon": {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}}))
    yield project
    filler = small_disk / "filler"
    if filler.exists():
        filler.unlink()
    if project.running():
        project.aiwg("daemon", "stop", "--timeout", "30")
        if project.running():
            project.kill_everything()


def fill(disk: Path) -> Path:
    """Write until the file system is full."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (64 * 1024, 1024, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def status(project: Project) -> dict[str, Any]:
    with project.client() as client:
        return client.call("daemon.status")


def test_output_that_cannot_be_written_leaves_the_agent_running_and_is_said(
        project_on_disk: Project, small_disk: Path) -> None:
    project = project_on_disk
    project.start()
    with project.client() as client:
        task_id = client.call("task.submit", prompt="@until:go @print:3000")["taskId"]
    wait_for(lambda: project.fake.runs(), timeout=20)
    filler = fill(small_disk)
    (project.fake.records / "go").write_text("")  # now the agent prints 200 KiB
    wait_for(lambda: any("cannot write task output" in i for i in status(project)["health_issues"]), timeout=20)
    assert project.running()
    filler.unlink()  # room again: the task settles, the health clears
    with project.client() as client:
        task = wait_for(lambda: (t := client.call("task.get", taskId=task_id))["state"] not in ("queued", "running")
                        and t, timeout=30)
    assert task["state"] == "completed"  # the agent was not killed by a broken pipe
    wait_for(lambda: not any("cannot write task output" in i for i in status(project)["health_issues"]), timeout=10)
    log = project.log_text()
    assert "Unhandled Error" not in log and "Traceback" not in log


def test_a_submit_refused_for_a_full_disk_never_runs(project_on_disk: Project, small_disk: Path) -> None:
    project = project_on_disk
    project.start()
    filler = fill(small_disk)
    refused = []
    with project.client() as client:
        for _ in range(3):
            with pytest.raises(RpcError) as caught:
                client.call("task.submit", prompt="must not run")
            refused.append(caught.value)
        stats = client.call("task.stats")
    for error in refused:
        assert error.code == STORE_UNWRITABLE and "could not be written to the task store" in error.message
        assert "disk is full" in error.message or "No space left on device" in error.message
        assert "taskId" not in str(error.data or {})
    assert stats.get("queued", 0) == 0 and stats.get("running", 0) == 0
    issues = status(project)["health_issues"]
    assert any("cannot be written" in i and "disk is full" in i for i in issues), issues
    filler.unlink()
    with project.client() as client:
        accepted = client.call("task.submit", prompt="runs")["taskId"]
        wait_for(lambda: client.call("task.get", taskId=accepted)["state"] == "completed", timeout=30)
        tasks = client.call("task.list", limit=100)
    assert [t["prompt"] for t in tasks] == ["runs"]  # none of the refused ones came back
    assert not any("cannot be written" in i for i in status(project)["health_issues"])  # cleared
    assert [run["prompt"] for run in project.fake.runs()] == ["runs"]

