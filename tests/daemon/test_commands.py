"""The daemon's own short commands, run for real: exit statuses, a timeout that kills
everything the command started, a missing program, bounded output, the daemon's
stop, and git snapshots of a repository and of a plain directory."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest_twisted

from aiwg.daemon.tasks.commands import CommandRunner, git_snapshot, user_shell
from tests.conftest import alive, wait_for


def runner() -> CommandRunner:
    from twisted.internet import reactor

    return CommandRunner(reactor)


def env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "SHELL": "/bin/sh"}


@pytest_twisted.ensureDeferred
async def test_exit_status_and_output(tmp_path: Path) -> None:
    ok = await runner().shell("echo fine; echo to-stderr >&2", cwd=str(tmp_path), env=env(), timeout=10)
    assert ok.exit_code == 0 and ok.succeeded and "fine" in ok.output and "to-stderr" in ok.output
    bad = await runner().shell("pwd; exit 3", cwd=str(tmp_path), env=env(), timeout=10)
    assert bad.exit_code == 3 and not bad.succeeded and bad.output.strip() == str(tmp_path)
    assert bad.error is None and not bad.timed_out


@pytest_twisted.ensureDeferred
async def test_a_timeout_kills_the_command_and_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    result = await runner().shell(f"sleep 60 & echo $! > {pid_file}; wait", cwd=str(tmp_path), env=env(),
                                  timeout=0.5)
    assert time.monotonic() - started < 10
    assert result.exit_code is None and result.timed_out and result.error == "timed out after 0.5s"
    child = int(pid_file.read_text())
    wait_for(lambda: not alive(child), timeout=5)


@pytest_twisted.ensureDeferred
async def test_a_missing_program_is_a_result_not_an_error(tmp_path: Path) -> None:
    result = await runner().run(["no-such-program-here"], cwd=str(tmp_path), env=env(), timeout=5)
    assert result.exit_code is None and result.error == "'no-such-program-here' not found on PATH"


@pytest_twisted.ensureDeferred
async def test_only_the_end_of_a_long_output_is_kept(tmp_path: Path) -> None:
    result = await runner().run(["sh", "-c", "seq 1 20000; echo last line"], cwd=str(tmp_path), env=env(),
                                timeout=10, limit=1000)
    assert result.exit_code == 0 and result.output.endswith("last line\n")
    assert result.output.startswith("[… earlier output cut …]") and len(result.output) < 1100


@pytest_twisted.ensureDeferred
async def test_stop_ends_what_is_running(tmp_path: Path) -> None:
    commands = runner()
    running = commands.shell("sleep 60", cwd=str(tmp_path), env=env(), timeout=120)
    assert commands.running == 1
    [stopped] = commands.stop()
    result = await running
    # Killed by the signal; or, when the stop came between the fork and the exec,
    # the child's exec failed first (exit 1): stopped either way, never run on.
    assert stopped is running and (result.exit_code is None or "execvpe" in result.output)
    assert result.error == "stopped: the daemon is stopping" and commands.running == 0


def test_the_users_shell_or_sh() -> None:
    assert user_shell({"SHELL": "/bin/sh"}) == "/bin/sh"
    assert user_shell({"SHELL": "/no/such/shell"}) == "/bin/sh"
    assert user_shell({"SHELL": "bash"}) == "/bin/sh"  # not a path: not trusted


@pytest_twisted.ensureDeferred
async def test_git_snapshot_of_a_repository_and_of_a_plain_directory(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert await git_snapshot(runner(), str(plain), {**env(), "GIT_CEILING_DIRECTORIES": str(tmp_path)}) is None

    repo = tmp_path / "repo"
    repo.mkdir()
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=git_env)
    (repo / "a.txt").write_text("a\n")
    fresh = await git_snapshot(runner(), str(repo), env())
    assert fresh == {"head": None, "status": "?? a.txt\n"}  # no commit yet
    subprocess.run(["git", "add", "a.txt"], cwd=repo, check=True, env=git_env)
    subprocess.run(["git", "commit", "-q", "-m", "a"], cwd=repo, check=True, env=git_env)
    (repo / "a.txt").write_text("changed\n")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert await git_snapshot(runner(), str(repo), env()) == {"head": head, "status": " M a.txt\n"}
    (repo / ".aiwg" / "daemon").mkdir(parents=True)
    (repo / ".aiwg" / "daemon" / "daemon.log").write_text("busy\n")
    (repo / ".aiwg" / "daemon.json").write_text("{}\n")
    assert (await git_snapshot(runner(), str(repo), env(), (".aiwg/daemon",)))["status"] == (
        " M a.txt\n?? .aiwg/\n")  # the config file is the user's; the daemon's directory is not
    (repo / ".aiwg" / "daemon.json").unlink()
    assert (await git_snapshot(runner(), str(repo), env(), (".aiwg/daemon",)))["status"] == " M a.txt\n"
