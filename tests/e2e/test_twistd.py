"""`twistd aiwg` and `twist aiwg` run by hand, as a user of Twisted would: nothing
left in the current directory, each log line once, and twistd's own flags honoured
when given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, wait_for

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def runner(project: Project, cwd: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=cwd, env=project.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def stopped(project: Project) -> None:
    project.aiwg("daemon", "stop", check=True)
    wait_for(lambda: not project.running(), timeout=20)


def test_twistd_alone_leaves_nothing_behind_and_logs_each_line_once(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = runner(project, elsewhere, "twistd", "aiwg", "--project", str(project.root))
    assert done.wait(timeout=30) == 0, done.stdout.read() if done.stdout else ""
    wait_for(project.running, timeout=20)
    assert project.paths.pid_file.read_text().strip() == str(project.pid())
    stopped(project)
    assert sorted(os.listdir(elsewhere)) == []  # no twistd.pid, no twistd.log
    assert project.log_text().count("daemon started (pid") == 1


@pytest.mark.parametrize("argv", [("twistd", "-n", "aiwg"), ("twist", "aiwg")], ids=["twistd-n", "twist"])
def test_in_the_foreground_each_line_goes_to_stdout_once(project: Project, tmp_path: Path,
                                                        argv: tuple[str, ...]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    child = runner(project, elsewhere, *argv, "--project", str(project.root))
    try:
        wait_for(project.running, timeout=20)
        stopped(project)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode in (0, -15), out  # Twisted ends by the signal that stopped it
    assert out.count("daemon started (pid") == 1, out
    assert out.count("daemon stopped") == 1, out
    assert sorted(os.listdir(elsewhere)) == []


def test_twistds_own_flags_stand(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = runner(project, elsewhere, "twistd", "--pidfile=mine.pid", "--logfile=mine.log", "aiwg",
                  "--project", str(project.root))
    assert done.wait(timeout=30) == 0
    wait_for(project.running, timeout=20)
    wait_for(lambda: (elsewhere / "mine.pid").exists(), timeout=10)
    assert (elsewhere / "mine.log").exists()
    stopped(project)
