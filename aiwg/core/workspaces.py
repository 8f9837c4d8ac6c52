# tests: tests/core/test_workspaces.py
"""Where an isolated task works, decided without running anything: its worktree
under `.aiwg/worktrees/<task-id>`, its branch `aiwg/<task-id>` (the prefix is
configurable), the message of the commit that collects its changes, and the size
of those changes read from `git diff --shortstat`.

The steps that use them (prepare a workspace from a base, run the agent in it,
collect a branch) live in the daemon; this is the part a remote executor shares.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from attrs import frozen

#: Where worktrees live, relative to the project root; never watched, never a
#: project change until merged.
WORKTREES_DIR = ".aiwg/worktrees"
DEFAULT_BRANCH_PREFIX = "aiwg/"
#: A git ref component may not hold these (git-check-ref-format(1)).
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|\.lock(?:/|$)|^\.|/\.|^-")
_SHORTSTAT = re.compile(
    r"(?P<files>\d+) files? changed(?:, (?P<ins>\d+) insertions?\(\+\))?(?:, (?P<dels>\d+) deletions?\(-\))?")


class WorkspaceError(ValueError):
    """A setting that cannot name a branch or a place; the message says which."""


@frozen
class Workspace:
    task_id: str
    path: PurePosixPath  # relative to the project root
    branch: str


@frozen
class ChangeSize:
    files: int = 0
    insertions: int = 0
    deletions: int = 0

    @property
    def empty(self) -> bool:
        return self.files == 0


def workspace_for(task_id: str, prefix: str = DEFAULT_BRANCH_PREFIX) -> Workspace:
    """The worktree and branch of a task; WorkspaceError if the prefix cannot start a ref."""
    branch = f"{prefix}{task_id}"
    if not task_id or "/" in task_id or _BAD_REF.search(branch):
        raise WorkspaceError(f"tasks.branch_prefix: {prefix!r} with {task_id!r} is not a valid git branch name "
                             f"({branch!r}; see git check-ref-format)")
    return Workspace(task_id, PurePosixPath(WORKTREES_DIR) / task_id, branch)


def commit_message(task_id: str, prompt: str, state: str, *, width: int = 72) -> str:
    """The commit that collects a task's changes: a subject naming the task and its
    end, then the prompt (its first lines), so that `git log` says what was asked."""
    words = " ".join(prompt.split())
    subject = f"aiwg {task_id} ({state}): {words}"
    if len(subject) > width:
        subject = subject[: width - 1].rstrip() + "…"
    body = "\n".join(prompt.strip().splitlines()[:20])
    return f"{subject}\n\n{body}\n\nTask: {task_id}\nState: {state}\n"


def change_size(shortstat: str) -> ChangeSize:
    """`git diff --shortstat` read: ` 3 files changed, 10 insertions(+), 2 deletions(-)`;
    nothing printed means nothing changed."""
    found = _SHORTSTAT.search(shortstat)
    if found is None:
        return ChangeSize()
    return ChangeSize(int(found["files"]), int(found["ins"] or 0), int(found["dels"] or 0))
