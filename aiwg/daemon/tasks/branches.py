# tests: tests/daemon/test_worktrees.py, tests/e2e/test_isolation.py
"""An isolated task's branch once it has ended: its diff against its base, a merge
into a branch (the project's checked-out one by default), or its discard.

A merge changes nothing unless it can be made whole: it is refused, naming the
files, when the checkout it would land in has uncommitted changes or when it
would conflict (found with `git merge-tree`, which touches no checkout).
"""

from __future__ import annotations

from typing import Any

from aiwg.core import workspaces
from aiwg.core.workspaces import WorkspaceRecord
from aiwg.daemon.tasks.git import GitError
from aiwg.daemon.tasks.worktrees import DIFF_LIMIT, GitWorkspaces, MergeRefused, WorkspaceFailed


class Branches:
    def __init__(self, worktrees: GitWorkspaces) -> None:
        self.worktrees = worktrees
        self.git = worktrees.git

    @property
    def root(self) -> str:
        return str(self.worktrees.root)

    async def _branch_tip(self, task_id: str, record: WorkspaceRecord) -> str:
        found = await self.git.run("rev-parse", "--verify", "-q", f"refs/heads/{record.branch}", cwd=self.root,
                                   ok=(0, 1, 128))
        tip = found.stdout.strip()
        if found.exit_code != 0 or not tip:
            why = {"empty": "it made no changes", "discarded": "it was discarded"}.get(
                record.state, f"branch {record.branch} is gone")
            raise MergeRefused(f"task {task_id} has no branch to work with: {why}")
        return tip

    async def diff(self, task_id: str, record: WorkspaceRecord, *, stat: bool = False) -> dict[str, Any]:
        """The branch against the commit the task started from."""
        tip = await self._branch_tip(task_id, record)
        args = ["diff", "--stat=120"] if stat else ["diff", "--no-color"]
        result = await self.git.run(*args, record.base or f"{tip}~0", tip, cwd=self.root, limit=DIFF_LIMIT)
        truncated = len(result.stdout.encode("utf-8", "replace")) >= DIFF_LIMIT
        return {"diff": result.stdout, "truncated": truncated, "base": record.base, "head": tip,
                "branch": record.branch}

    async def merge(self, task_id: str, record: WorkspaceRecord, *, into: str | None, squash: bool,
                    message: str) -> WorkspaceRecord:
        """Merged, or MergeRefused with nothing changed."""
        await self.worktrees.shared.acquire()
        try:
            return await self._merge(task_id, record, into, squash, message)
        finally:
            self.worktrees.shared.release()

    async def _merge(self, task_id: str, record: WorkspaceRecord, into: str | None, squash: bool,
                     message: str) -> WorkspaceRecord:
        tip = await self._branch_tip(task_id, record)
        target = into or await self._checked_out_branch()
        if not await self.git.succeeds("rev-parse", "--verify", "-q", f"refs/heads/{target}", cwd=self.root):
            raise MergeRefused(f"there is no branch {target!r} to merge into")
        if await self.git.succeeds("merge-base", "--is-ancestor", tip, f"refs/heads/{target}", cwd=self.root):
            raise MergeRefused(f"task {task_id}'s branch {record.branch} is already merged into {target}")
        listing = await self.git.text("worktree", "list", "--porcelain", cwd=self.root)
        where = workspaces.worktree_branches(listing).get(target)
        temporary = None
        if where is None:  # not checked out anywhere: merged in a checkout of its own, then removed
            temporary = self.worktrees.worktrees_dir / f".merge-{task_id}"
            await self.worktrees.remove_worktree(temporary)
            await self.git.run("worktree", "add", "--quiet", str(temporary), target, cwd=self.root)
            where = str(temporary)
        try:
            await self._refuse_if_dirty(where, target)
            await self._refuse_if_conflicting(target, record.branch, task_id)
            commit = await self._merge_in(where, record.branch, squash, message)
        finally:
            if temporary is not None:
                await self.worktrees.remove_worktree(temporary)
        return record.but(state="merged", merged_into=target, merge_commit=commit, head=tip)

    async def _checked_out_branch(self) -> str:
        head = await self.git.run("symbolic-ref", "-q", "--short", "HEAD", cwd=self.root, ok=(0, 1))
        if head.exit_code != 0:
            raise MergeRefused("the project's checkout has a detached HEAD: name the branch to merge into "
                               "(--into BRANCH)")
        return head.stdout.strip()

    async def _refuse_if_dirty(self, where: str, target: str) -> None:
        status = (await self.git.run("status", "--porcelain", "--untracked-files=no", cwd=where)).stdout
        if status.strip():
            files = workspaces.status_paths(status)
            raise MergeRefused(
                f"the checkout of {target} ({where}) has uncommitted changes in {workspaces.listing(files)}: "
                "commit or stash them first; nothing was merged", files)

    async def _refuse_if_conflicting(self, target: str, branch: str, task_id: str) -> None:
        probe = await self.git.run("merge-tree", "--write-tree", "--name-only", "--no-messages",
                                   f"refs/heads/{target}", f"refs/heads/{branch}", cwd=self.root, ok=(0, 1, 129))
        if probe.exit_code == 1:
            files = workspaces.merge_tree_conflicts(probe.stdout)
            raise MergeRefused(
                f"task {task_id}'s branch {branch} conflicts with {target} in {workspaces.listing(files)}; "
                f"nothing was merged (merge it by hand: git merge {branch})", files)
        # 129: a git older than 2.38 has no --write-tree; the merge itself finds conflicts.

    async def _merge_in(self, where: str, branch: str, squash: bool, message: str) -> str:
        try:
            if squash:
                await self.git.run("merge", "--squash", "--no-verify", branch, cwd=where)
                await self.git.run("commit", "-q", "--no-verify", "-m", message, cwd=where,
                                   env=await self.worktrees.identity(where))
            else:
                await self.git.run("merge", "--no-ff", "--no-verify", "-m", message, branch, cwd=where,
                                   env=await self.worktrees.identity(where))
        except GitError as exc:
            said = exc.result.output if exc.result is not None else ""
            await self.git.run("merge", "--abort", cwd=where, ok=(0, 1, 128))
            if squash:
                await self.git.run("reset", "--merge", cwd=where, ok=(0, 1, 128))
            files = [line.strip() for line in said.splitlines() if line.startswith("\t")]
            if "would be overwritten" in said:
                raise MergeRefused(f"merging {branch} would overwrite files in {where} that git does not "
                                   f"track: {workspaces.listing(files)}; nothing was merged", files) from None
            if "CONFLICT" in exc.result.stdout if exc.result is not None else False:
                raise MergeRefused(f"{branch} conflicts; nothing was merged", files) from None
            raise WorkspaceFailed(f"the merge of {branch} failed and was undone: {exc}") from None
        return await self.git.text("rev-parse", "HEAD", cwd=where)

    async def discard(self, task_id: str, record: WorkspaceRecord) -> WorkspaceRecord:
        """The branch deleted, and a kept worktree with it."""
        await self.worktrees.shared.acquire()
        try:
            if record.path is not None:
                await self.worktrees.remove_worktree(self.worktrees.root / record.path)
            await self.git.run("branch", "-D", "--", record.branch, cwd=self.root, ok=(0, 1))
        finally:
            self.worktrees.shared.release()
        return record.but(state="discarded", path=None)
