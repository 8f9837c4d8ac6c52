# tests: tests/daemon/test_worktrees.py, tests/e2e/test_isolation.py
"""The workspace step on this machine: a git worktree per isolated task under
`.aiwg/worktrees/<task-id>`, on a branch of its own, and what is done with that
branch afterwards (diff, merge, discard).

Every git command is a child process under the reactor. Commands that change
what the repository shares (worktrees, branches, the target of a merge) take
turns; work inside one task's worktree does not wait for the others'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.internet.defer import DeferredLock, FirstError, ensureDeferred, gatherResults
from twisted.logger import Logger

from aiwg.core import workspaces
from aiwg.core.workspaces import ChangeSize, WorkspaceError, WorkspaceRecord
from aiwg.daemon.tasks.git import Git, GitError, failure_message, lock_path

#: The identity of the collecting commits when neither tasks.commit_author nor
#: the repository's git configuration gives one.
FALLBACK_AUTHOR = ("aiwg-daemon", "aiwg-daemon@localhost")
#: A worktree's index lock at least this old, found at start, is left by a git
#: that was killed with the daemon.
STALE_LOCK_SECONDS = 2.0
#: Bytes of a diff sent at most.
DIFF_LIMIT = 8 * 1024 * 1024


class WorkspaceFailed(Exception):
    """The workspace step cannot be done; the message says why, for the task's error."""


class MergeRefused(Exception):
    """A merge that was not made (nothing was changed); `files` are the ones in the way."""

    def __init__(self, message: str, files: list[str] | None = None) -> None:
        super().__init__(message)
        self.files = files or []


class GitWorkspaces:
    """The WorkspaceStep with git worktrees beside the project, and the review
    steps that follow it."""

    log = Logger()

    def __init__(self, *, reactor: Any, root: Path, environ: Mapping[str, str], settings: Callable[[], Any],
                 now: Callable[[], float] | None = None) -> None:
        self.root = root
        self._settings = settings  # IsolationSettings, replaced by a reload
        self.git = Git(reactor, environ, settings().git_timeout)
        self.shared = DeferredLock()  # worktree and branch changes take turns
        self._now = now or reactor.seconds

    @property
    def settings(self) -> Any:
        return self._settings()

    @property
    def worktrees_dir(self) -> Path:
        return self.root / workspaces.WORKTREES_DIR

    def path_of(self, task_id: str) -> Path:
        return self.root / workspaces.WORKTREES_DIR / task_id

    # -- prepare -----------------------------------------------------------------

    async def prepare(self, task_id: str, base: str | None, previous: WorkspaceRecord | None
                      ) -> tuple[WorkspaceRecord, str]:
        self.git.timeout = self.settings.git_timeout
        try:
            branch = previous.branch if previous and previous.branch else \
                workspaces.workspace_for(task_id, self.settings.branch_prefix).branch
        except WorkspaceError as exc:
            raise WorkspaceFailed(str(exc)) from None
        root = str(self.root)
        prefix, checked_out = await self._probe()
        path = self.path_of(task_id)
        carried = previous is not None and previous.base is not None and await self.git.succeeds(
            "rev-parse", "--verify", "-q", f"refs/heads/{branch}", cwd=root)
        if not carried:
            base_ref, base_sha = await self._base(base, checked_out)
        await self.shared.acquire()
        try:
            if os.path.lexists(path):  # left by a crash between its making and its record
                await self.remove_worktree(path)
            if carried:  # an earlier attempt's branch: carried on where it stopped
                assert previous is not None
                base_ref, base_sha = previous.base_ref or "", previous.base or ""
                await self._git("worktree", "add", "--quiet", str(path), branch, cwd=root)
            else:
                await self._git("worktree", "add", "--quiet", "-b", branch, str(path), base_sha, cwd=root)
            self._ignore_worktrees_dir()
        finally:
            self.shared.release()
        record = WorkspaceRecord(branch=branch, state="active", base=base_sha, base_ref=base_ref or None,
                                 head=base_sha, path=str(path.relative_to(self.root)))
        return record, str(path / prefix) if prefix else str(path)

    async def _probe(self) -> tuple[str, str]:
        """Where the project root is inside its repository ('' at its top) and what
        its checkout's HEAD is (`refs/heads/…`, `HEAD` when detached, `` unborn), in
        one git command; WorkspaceFailed if the project is in no repository."""
        result = await self.git.run("rev-parse", "--show-prefix", "--symbolic-full-name", "HEAD",
                                    cwd=str(self.root), ok=(0, 128))
        lines = result.stdout.split("\n")
        if result.exit_code == 0 and len(lines) >= 2:
            return lines[0], lines[1]
        if "not a git repository" in result.output:
            raise WorkspaceFailed(
                f"the project ({self.root}) is not a git repository, so the task cannot run in a worktree "
                "of its own: run `git init` and commit, or run it unisolated (--no-isolate, or "
                "tasks.isolation: none)")
        if len(lines) >= 2 and lines[1] == "HEAD" and "unknown revision" in result.output:
            return lines[0], ""  # no commit yet
        raise WorkspaceFailed(failure_message(("rev-parse",), result))

    async def _base(self, base: str | None, checked_out: str) -> tuple[str, str]:
        """The base asked for (or the checkout's branch) and its commit."""
        if base is None:
            if checked_out == "HEAD":
                at = await self.git.run("rev-parse", "--short", "HEAD", cwd=str(self.root), ok=(0, 128))
                raise WorkspaceFailed(
                    f"the project's checkout has a detached HEAD (at {at.stdout.strip() or '?'}), so there is "
                    "no branch to start the task from: check out a branch, or name a base (--base REF)")
            if not checked_out:
                raise WorkspaceFailed(
                    "the repository has no commit yet (its HEAD is unborn), so a worktree has nothing to "
                    "start from: make a first commit")
            base = checked_out.removeprefix("refs/heads/")
        found = await self.git.run("rev-parse", "--verify", "-q", "--end-of-options", f"{base}^{{commit}}",
                                   cwd=str(self.root), ok=(0, 1, 128))
        if found.exit_code != 0 or not found.stdout.strip():
            raise WorkspaceFailed(f"base {base!r} does not name a commit in this repository")
        return base, found.stdout.strip()

    async def remove_worktree(self, path: Path) -> None:
        """A worktree (or a leftover directory where one was) unregistered and removed."""
        if not os.path.lexists(path):
            return
        removed = await self.git.run("worktree", "remove", "--force", "--force", str(path), cwd=str(self.root),
                                     ok=(0, 128))
        if removed.exit_code != 0 or os.path.lexists(path):
            await self.git.runner.run(["rm", "-rf", "--", str(path)], cwd=None, env=self.git.env,
                                      timeout=self.settings.git_timeout)
            await self.git.run("worktree", "prune", cwd=str(self.root))

    def _ignore_worktrees_dir(self) -> None:
        """The main checkout's `git status` and `git add -A` pass the worktrees by."""
        marker = self.worktrees_dir / ".gitignore"
        if not marker.exists():
            try:
                marker.write_text("# the worktrees of isolated tasks (aiwg daemon)\n*\n")
            except OSError as exc:
                self.log.warn("cannot write {path}: {error}", path=str(marker), error=str(exc))

    async def _git(self, *args: str, cwd: str) -> Any:
        try:
            return await self.git.run(*args, cwd=cwd)
        except GitError as exc:
            raise WorkspaceFailed(str(exc)) from None

    # -- during and after the agent ---------------------------------------------------

    async def checkpoint(self, record: WorkspaceRecord, message: str) -> WorkspaceRecord:
        path = self._worktree(record)
        if path is None:
            return record
        head = await self._commit(path, message)
        return record.but(head=head, size=await self._size(record.base, head))

    async def collect(self, record: WorkspaceRecord, message: str, *, keep: bool, final: bool) -> WorkspaceRecord:
        root = str(self.root)
        path = self._worktree(record)
        if path is not None:
            await self._commit(path, message, tip=False)
            tip = f"refs/heads/{record.branch}"
            # The tip read, the branch measured and the worktree removed at once.
            steps = [self.git.text("rev-parse", tip, cwd=root), self._size(record.base, tip)]
            if not keep:
                await self.shared.acquire()
                steps.append(self.remove_worktree(path))
            try:
                head, size, *_ = await gatherResults([ensureDeferred(step) for step in steps], consumeErrors=True)
            except FirstError as exc:
                exc.subFailure.raiseException()
            finally:
                if not keep:
                    self.shared.release()
        else:
            found = await self.git.run("rev-parse", "--verify", "-q", f"refs/heads/{record.branch}", cwd=root,
                                       ok=(0, 1, 128))
            head = found.stdout.strip() or record.head
            size = await self._size(record.base, head)
        if final and size.empty and head == record.base and not keep:
            await self.shared.acquire()
            try:
                await self.git.run("branch", "-D", "--", record.branch, cwd=root, ok=(0, 1))
            finally:
                self.shared.release()
            return record.but(state="empty", head=head, size=size, path=None)
        kept = keep and path is not None
        return record.but(state="kept" if kept else "open", head=head, size=size,
                          path=record.path if kept else None)

    def _worktree(self, record: WorkspaceRecord) -> Path | None:
        if record.path is None:
            return None
        path = self.root / record.path
        return path if _is_worktree(path) else None

    async def _commit(self, path: Path, message: str, tip: bool = True) -> str:
        """Everything in the worktree (tracked and untracked, as .gitignore says)
        committed, if anything changed; the branch's tip (if `tip`)."""
        where = str(path)
        self._stale_lock(where)
        try:
            await self.git.run("add", "-A", cwd=where)
            committed = await self.git.run("commit", "-q", "--no-verify", "-m", message, cwd=where, ok=(0, 1),
                                           env=await self.identity(where))
            if committed.exit_code == 1 and "nothing" not in committed.stdout + committed.output:
                raise GitError(failure_message(("commit",), committed), committed)
            return await self.git.text("rev-parse", "HEAD", cwd=where) if tip else ""
        except GitError as exc:
            raise WorkspaceFailed(f"cannot commit the task's changes in {path}: {exc}") from None

    async def identity(self, where: str) -> dict[str, str]:
        """Who the commit is by: tasks.commit_author, else git's own, else ours."""
        env: dict[str, str] = {}
        author = self.settings.author
        if author is None:
            known = await self.git.run("config", "user.email", cwd=where, ok=(0, 1))
            author = None if known.stdout.strip() else FALLBACK_AUTHOR
        if author is not None:
            env.update(GIT_AUTHOR_NAME=author[0], GIT_AUTHOR_EMAIL=author[1],
                       GIT_COMMITTER_NAME=author[0], GIT_COMMITTER_EMAIL=author[1])
        return env

    async def _size(self, base: str | None, head: str | None) -> ChangeSize:
        """The change from `base` to `head` (a commit, or a ref)."""
        if not base or not head or base == head:
            return ChangeSize()
        result = await self.git.run("diff", "--shortstat", base, head, cwd=str(self.root))
        return workspaces.change_size(result.stdout)

    def _stale_lock(self, worktree: str) -> None:
        """An index lock no git holds any more (left by one killed with the daemon)."""
        lock = lock_path(worktree)
        if lock is None:
            return
        try:
            age = self._now() - os.stat(lock).st_mtime
        except OSError:
            return
        if age >= STALE_LOCK_SECONDS:
            self.log.warn("removing a stale git lock {lock} ({age:.0f} s old)", lock=lock, age=age)
            try:
                os.unlink(lock)
            except OSError:
                pass

    # -- at start --------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """The task ids that have a worktree directory now."""
        try:
            return sorted(entry.name for entry in os.scandir(self.worktrees_dir)
                          if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."))
        except OSError:
            return []

    async def remove_strays(self, keep: set[str]) -> None:
        """Worktrees of ours that no task accounts for (and temporary merge
        checkouts), removed; git's list of worktrees pruned."""
        try:
            names = [e.name for e in os.scandir(self.worktrees_dir) if e.is_dir(follow_symlinks=False)]
        except OSError:
            names = []
        await self.shared.acquire()
        try:
            for name in names:
                if name not in keep:
                    self.log.warn("removing the stray worktree {path}", path=str(self.worktrees_dir / name))
                    await self.remove_worktree(self.worktrees_dir / name)
            if await self.git.succeeds("rev-parse", "--git-dir", cwd=str(self.root)):
                await self.git.run("worktree", "prune", cwd=str(self.root))
        finally:
            self.shared.release()

    async def disk_usage(self) -> int | None:
        """Bytes the live worktrees take on disk (`du`, a child process: a large
        tree is not walked on the reactor's time); None if it cannot be told."""
        if not self.worktrees_dir.is_dir():
            return 0
        result = await self.git.runner.run(["du", "-sk", str(self.worktrees_dir)], cwd=None,
                                           env=self.git.env, timeout=60, separate=True)
        try:
            return int(result.stdout.split()[0]) * 1024
        except (IndexError, ValueError):
            return None


def _is_worktree(path: Path) -> bool:
    return os.path.isfile(path / ".git")
