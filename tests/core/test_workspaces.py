"""An isolated task's worktree, branch, commit message and change size, decided
without git."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from aiwg.core.globs import IgnoreSet
from aiwg.core.workspaces import ChangeSize, WorkspaceError, change_size, commit_message, workspace_for


def test_a_task_works_in_its_own_worktree_on_its_own_branch() -> None:
    ws = workspace_for("t-abc123defg")
    assert ws.path == PurePosixPath(".aiwg/worktrees/t-abc123defg") and ws.branch == "aiwg/t-abc123defg"
    assert workspace_for("t-abc123defg", "agents/").branch == "agents/t-abc123defg"


@pytest.mark.parametrize("prefix", ["bad prefix/", "x..y/", "-x/", "a~b/", "/lead", "x.lock/", "a@{b/", ".hidden/"])
def test_a_prefix_that_cannot_make_a_branch_name_is_refused_by_name(prefix: str) -> None:
    with pytest.raises(WorkspaceError, match="tasks.branch_prefix"):
        workspace_for("t-abc123defg", prefix)
    with pytest.raises(WorkspaceError):
        workspace_for("", "aiwg/")


def test_the_commit_names_the_task_and_its_end_and_keeps_the_prompt() -> None:
    message = commit_message("t-1", "Fix the failing tests\nin src/parser.py, please", "completed")
    subject, _, rest = message.partition("\n\n")
    assert subject == "aiwg t-1 (completed): Fix the failing tests in src/parser.py, please"
    assert rest.startswith("Fix the failing tests\nin src/parser.py, please") and "State: completed" in rest
    long = commit_message("t-2", "x" * 200, "interrupted").splitlines()[0]
    assert len(long) == 72 and long.endswith("…")


def test_shortstat_is_read_and_silence_means_no_change() -> None:
    assert change_size(" 3 files changed, 10 insertions(+), 2 deletions(-)\n") == ChangeSize(3, 10, 2)
    assert change_size(" 1 file changed, 1 insertion(+)") == ChangeSize(1, 1, 0)
    assert change_size(" 1 file changed, 4 deletions(-)") == ChangeSize(1, 0, 4)
    assert change_size("").empty


def test_the_watcher_never_reports_files_in_a_worktree() -> None:
    ignore = IgnoreSet(["!.aiwg/worktrees/"])  # not even when asked to
    assert ignore.ignores(".aiwg/worktrees/t-1/src/app.py") and ignore.ignores_dir(".aiwg/worktrees")
