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
from typing import Protocol
from pathlib import PurePosixPath

from attrs import frozen

from aiwg.core.workspace_text import summary_text

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
    body = "\n".join(line[:500] for line in prompt.strip().splitlines()[:20])
    return f"{subject}\n\n{body}\n\nTask: {task_id}\nState: {state}\n"


def change_size(shortstat: str) -> ChangeSize:
    """`git diff --shortstat` read: ` 3 files changed, 10 insertions(+), 2 deletions(-)`;
    nothing printed means nothing changed."""
    found = _SHORTSTAT.search(shortstat)
    if found is None:
        return ChangeSize()
    return ChangeSize(int(found["files"]), int(found["ins"] or 0), int(found["dels"] or 0))


#: What became of a task's workspace: `preparing` (its worktree is being made),
#: `active` (the agent works in it), `open` (collected: its branch waits for a
#: merge or a discard), `kept` (as open, and the worktree is kept for
#: inspection), `empty` (no change: no commit, no branch), `merged`, `discarded`.
STATES = ("preparing", "active", "open", "kept", "awaiting_merge", "empty", "merged", "discarded")
#: States in which the branch holds work that has not been merged or discarded
#: (`awaiting_merge`: tasks.merge is "approval", and a person has not yet said).
REVIEWABLE = ("open", "kept", "awaiting_merge")


@frozen
class WorkspaceRecord:
    """An isolated task's workspace as the task record keeps it (and the wire shows
    it): its branch, the commit it started from (`base`, and `base_ref` as it was
    asked for), the branch's tip (`head`) and the size of its changes."""

    branch: str
    state: str = "preparing"
    base: str | None = None
    base_ref: str | None = None
    head: str | None = None
    size: ChangeSize = ChangeSize()
    path: str | None = None  # the worktree, while there is one
    merged_into: str | None = None
    merge_commit: str | None = None
    note: str | None = None

    def but(self, **changes: object) -> "WorkspaceRecord":
        from attrs import evolve
        return evolve(self, **changes)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "branch": self.branch, "state": self.state, "base": self.base, "baseRef": self.base_ref,
            "head": self.head, "filesChanged": self.size.files, "insertions": self.size.insertions,
            "deletions": self.size.deletions,
        }
        for key, value in (("path", self.path), ("mergedInto", self.merged_into),
                           ("mergeCommit", self.merge_commit), ("note", self.note)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "WorkspaceRecord":
        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        def number(key: str) -> int:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        state = text("state") or "open"
        return cls(
            branch=text("branch") or "", state=state if state in STATES else "open", base=text("base"),
            base_ref=text("baseRef"), head=text("head"),
            size=ChangeSize(number("filesChanged"), number("insertions"), number("deletions")),
            path=text("path"), merged_into=text("mergedInto"), merge_commit=text("mergeCommit"), note=text("note"),
        )


def summary(record: WorkspaceRecord) -> str:
    """One line for a person: where the work is and how big it is."""
    return summary_text(record.to_json())


def worktree_branches(porcelain: str) -> dict[str, str]:
    """`git worktree list --porcelain` read: each checked-out branch (short name)
    and the worktree it is checked out in."""
    out: dict[str, str] = {}
    path = None
    for line in porcelain.splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
        elif line.startswith("branch ") and path is not None:
            ref = line[len("branch "):]
            out[ref.removeprefix("refs/heads/")] = path
    return out


def worktree_paths(porcelain: str) -> list[str]:
    """Every worktree `git worktree list --porcelain` names, the main one first."""
    return [line[len("worktree "):] for line in porcelain.splitlines() if line.startswith("worktree ")]


def status_paths(porcelain: str) -> list[str]:
    """The paths `git status --porcelain` names (the new name of a rename)."""
    paths = []
    for line in porcelain.splitlines():
        if len(line) > 3:
            path = line[3:]
            paths.append(path.split(" -> ", 1)[-1])
    return paths


def merge_tree_conflicts(output: str) -> list[str]:
    """`git merge-tree --write-tree --name-only --no-messages` of a conflicting
    merge read: the tree's id, then one conflicted path a line."""
    lines = [line for line in output.splitlines() if line.strip()]
    return sorted(set(lines[1:]))


def listing(paths: list[str], limit: int = 20) -> str:
    """Paths for a message: the first `limit` of them, and how many more."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def parse_author(text: str) -> tuple[str, str]:
    """`tasks.commit_author` read: "Name <email>"; WorkspaceError if it is not that."""
    found = re.fullmatch(r"\s*([^<>]*?)\s*<([^<>\s]+)>\s*", text)
    if found is None or not found[1]:
        raise WorkspaceError(f"tasks.commit_author: {text!r} is not of the form 'Name <email>'")
    return found[1], found[2]


class WorkspaceStep(Protocol):
    """The workspace step, as any executor runs it (here: git worktrees beside the
    project; later: on another machine): prepare a workspace from a base, let the
    agent work in it, and collect its changes onto the task's branch."""

    async def prepare(self, task_id: str, base: str | None, previous: WorkspaceRecord | None
                      ) -> tuple[WorkspaceRecord, str]:
        """The task's workspace, ready: its record and the agent's working directory.
        `previous`: what an earlier attempt left (its branch is carried on)."""

    async def checkpoint(self, record: WorkspaceRecord, message: str) -> WorkspaceRecord:
        """Commit what the agent changed so far (nothing: no commit)."""

    async def collect(self, record: WorkspaceRecord, message: str, *, keep: bool, final: bool) -> WorkspaceRecord:
        """Commit the changes, remove the workspace (unless `keep`), and measure
        the branch. `final`: the task has ended, so a branch with no change goes."""
