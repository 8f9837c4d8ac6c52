# tests: tests/e2e/test_remote.py
"""A worker's copies of the projects it runs tasks for: one bare repository per
`git_remote` under its cache, a worktree per task at the task's base commit, on
the task's branch; the changes committed and pushed back when the agent ends.

git runs as a blocking child process here (a worker's task is a thread of its
own), with the daemon's clean environment: no repository variables, no prompt.
Fetches and worktree changes of one repository take turns.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Mapping

from aiwg.daemon.tasks.git import GitError, git_environment, run_blocking

DEFAULT_AUTHOR = ("aiwg-daemon", "aiwg-daemon@localhost")


class RepoCache:
    def __init__(self, root: Path, environ: Mapping[str, str]) -> None:
        self.root = root
        self.env = git_environment(environ)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, repo: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(str(repo), threading.Lock())

    def git(self, cwd: Path, *args: str) -> str:
        return run_blocking(str(cwd), *args, env=self.env)

    def repository(self, remote: str) -> Path:
        """The bare copy of `remote` (made on first use)."""
        repo = self.root / "repos" / (hashlib.sha256(remote.encode()).hexdigest()[:16] + ".git")
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            self.git(repo, "init", "--quiet", "--bare")
        return repo

    def checkout(self, remote: str, base: str, branch: str, task_id: str) -> Path:
        """A worktree of the task's base commit (fetched from `remote` by the ref the
        daemon pushed it under) on a new branch: where the agent works."""
        repo = self.repository(remote)
        work = self.root / "work" / task_id
        with self._lock(repo):
            self.git(repo, "fetch", "--quiet", "--no-tags", remote, f"+refs/aiwg/base/{task_id}:refs/aiwg/base/{task_id}")
            if work.exists():  # an earlier attempt's, on this worker
                self._remove(repo, work, branch)
            self.git(repo, "worktree", "add", "--quiet", "-B", branch, str(work), base)
            self.git(repo, "update-ref", "-d", f"refs/aiwg/base/{task_id}")
        return work

    def collect(self, work: Path, remote: str, base: str, branch: str, message: str,
                author: tuple[str, str] | None) -> str | None:
        """Commit what the agent changed and push the branch; its tip, or None when
        nothing changed (no commit, nothing pushed)."""
        name, email = author or DEFAULT_AUTHOR
        identity = ("-c", f"user.name={name}", "-c", f"user.email={email}")
        if self.git(work, "status", "--porcelain", "--untracked-files=all"):
            self.git(work, "add", "--all")
            self.git(work, *identity, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        head = self.git(work, "rev-parse", "HEAD")
        if head == base:
            return None
        self.git(work, "push", "--quiet", remote, f"+HEAD:refs/heads/{branch}")  # an earlier attempt's is replaced
        return head

    def remove(self, remote: str, work: Path, branch: str) -> None:
        """The task's worktree and branch go; the copy is packed now and then (git's
        own threshold: the daemon's settings turn automatic gc off for each command)."""
        repo = self.repository(remote)
        with self._lock(repo):
            self._remove(repo, work, branch)
            try:
                self.git(repo, "-c", "gc.auto=6700", "gc", "--auto", "--quiet")
            except GitError:
                pass  # a copy that cannot be packed still works

    def _remove(self, repo: Path, work: Path, branch: str) -> None:
        try:
            self.git(repo, "worktree", "remove", "--force", str(work))
        except GitError:
            shutil.rmtree(work, ignore_errors=True)
            self.git(repo, "worktree", "prune")
        try:
            self.git(repo, "branch", "--quiet", "-D", branch)
        except GitError:
            pass  # never made

