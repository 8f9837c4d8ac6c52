# tests: tests/daemon/test_worktrees.py
"""git, run for the workspace step: a child process under the reactor (never a
call that blocks it), with a clean environment, no prompt for credentials, C
locale messages, and a clear error that names the command and what git said.

A command that meets another git's lock (`index.lock`, `packed-refs.lock`: a
person's own git in the same repository, or a git left over from a daemon that
was killed) is tried again a few times before it fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any, Mapping

from twisted.internet.task import deferLater
from twisted.logger import Logger

from aiwg.daemon.tasks.commands import CommandResult, CommandRunner

#: Variables that point git at another repository or index: a daemon started
#: from a git hook has them, and neither our git nor an agent's must follow them.
REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                        "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_PREFIX", "GIT_NAMESPACE")
#: Tries of a command that meets a lock, and the wait before the first retry.
LOCK_TRIES = 6
LOCK_WAIT = 0.1
_LOCKED = re.compile(r"Unable to create '([^']+\.lock)': File exists|cannot lock ref|\.lock': File exists")
#: Settings for every command: no automatic gc in the middle of a task's step,
#: no signing that would wait for a passphrase, no pager.
GIT_SETTINGS = ("-c", "gc.auto=0", "-c", "commit.gpgsign=false", "-c", "core.pager=cat", "-c", "advice.detachedHead=false")


class GitError(Exception):
    """A git command that failed; the message says which and what git said."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def git_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment for git: no repository variables, no prompts."""
    env = {k: v for k, v in environ.items() if k not in REPOSITORY_VARIABLES}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_ASKPASS="/bin/false", SSH_ASKPASS="/bin/false",
               GIT_EDITOR="true", GIT_MERGE_AUTOEDIT="no")
    return env


def run_blocking(cwd: str, *args: str, env: Mapping[str, str], timeout: float = 600.0) -> str:
    """`git args…` in `cwd`, blocking, with the same settings, environment and
    errors as `Git.run`: for a thread of its own (a remote executor's calls, a
    worker's task), never the reactor. Its standard output, stripped."""
    started = time.monotonic()
    try:
        done = subprocess.run(["git", "-C", cwd, *GIT_SETTINGS, *args], env=dict(env), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        result = CommandResult(None, "", time.monotonic() - started, timed_out=True,
                               error=f"timed out after {timeout:g} s")
    except OSError as exc:
        error = "not found on PATH" if isinstance(exc, FileNotFoundError) else str(exc)
        result = CommandResult(None, "", time.monotonic() - started, error=error)
    else:
        if done.returncode == 0:
            return done.stdout.decode("utf-8", "replace").strip()
        result = CommandResult(done.returncode, done.stderr.decode("utf-8", "replace"), time.monotonic() - started)
    raise GitError(failure_message(args, result), result)


class Git:
    log = Logger()

    def __init__(self, reactor: Any, environ: Mapping[str, str], timeout: float = 600.0) -> None:
        self.reactor = reactor
        self.runner = CommandRunner(reactor)
        self.env = git_environment(environ)
        self.timeout = timeout

    async def run(self, *args: str, cwd: str, ok: tuple[int, ...] = (0,), env: Mapping[str, str] | None = None,
                  limit: int = 16 * 1024 * 1024) -> CommandResult:
        """`git args…` in `cwd`; its result when its exit status is in `ok`, else
        GitError. Standard output is `result.stdout`, standard error `result.output`."""
        # `-C`, and the child started where the daemon is: Twisted then starts it
        # with posix_spawn instead of forking the whole daemon.
        argv = ["git", "-C", cwd, *GIT_SETTINGS, *args]
        environment = {**self.env, **env} if env else self.env
        for attempt in range(LOCK_TRIES):
            result: CommandResult = await self.runner.run(argv, cwd=None, env=environment, timeout=self.timeout,
                                                         limit=limit, separate=True)
            if result.exit_code in ok:
                return result
            if result.exit_code is not None and _LOCKED.search(result.output) and attempt + 1 < LOCK_TRIES:
                await deferLater(self.reactor, LOCK_WAIT * 2 ** attempt, lambda: None)
                continue
            raise GitError(failure_message(args, result), result)
        raise AssertionError("unreachable")

    async def text(self, *args: str, cwd: str) -> str:
        """The command's standard output, stripped."""
        return (await self.run(*args, cwd=cwd)).stdout.strip()

    async def succeeds(self, *args: str, cwd: str) -> bool:
        """Whether the command exits 0 (1 and 128 are answers, not failures)."""
        result = await self.run(*args, cwd=cwd, ok=(0, 1, 128))
        return result.exit_code == 0

    def pids(self) -> set[int]:
        return self.runner.pids()

    @property
    def running(self) -> int:
        return self.runner.running


def failure_message(args: tuple[str, ...], result: CommandResult) -> str:
    """`git worktree add …` failed: what git said (its last lines), or why it did not run."""
    shown = " ".join(a for a in args[:2] if not a.startswith("-")) or "git"
    if result.error and "not found on PATH" in result.error:
        return "git is not installed (not found on PATH); isolated tasks need it"
    if result.error:
        return f"git {shown}: {result.error}"
    said = [line.strip() for line in result.output.strip().splitlines() if line.strip()]
    told = "; ".join(said[-3:]) if said else f"exit status {result.exit_code}"
    return f"git {shown} failed: {told}"


def lock_path(worktree: str) -> str | None:
    """The index lock of a linked worktree (in its git directory), if the
    worktree's `.git` file says where that is."""
    try:
        with open(os.path.join(worktree, ".git"), encoding="utf-8") as pointer:
            line = pointer.readline().strip()
    except OSError:
        return None
    if not line.startswith("gitdir: "):
        return None
    gitdir = line[len("gitdir: "):]
    if not os.path.isabs(gitdir):
        gitdir = os.path.join(worktree, gitdir)
    return os.path.join(gitdir, "index.lock")
