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


# -- the record, and git's output read -------------------------------------------

from aiwg.core import workspaces as ws  # noqa: E402


def test_a_workspace_record_goes_to_the_wire_and_back_unchanged() -> None:
    record = ws.WorkspaceRecord(branch="aiwg/t-1", state="merged", base="a" * 40, base_ref="main", head="b" * 40,
                                size=ChangeSize(3, 10, 2), merged_into="main", merge_commit="c" * 40,
                                note="merged by hand")
    data = record.to_json()
    assert data["filesChanged"] == 3 and data["insertions"] == 10 and data["deletions"] == 2
    assert data["baseRef"] == "main" and "path" not in data
    assert ws.WorkspaceRecord.from_json(data) == record
    # A damaged or foreign value reads as something safe, never an exception.
    odd = ws.WorkspaceRecord.from_json({"branch": "aiwg/t-2", "state": "exploded", "filesChanged": "7"})
    assert odd.state == "open" and odd.size.files == 0


def test_the_summary_says_where_the_work_is_and_how_big() -> None:
    base = ws.WorkspaceRecord(branch="aiwg/t-1", state="open", size=ChangeSize(1, 1, 1))
    assert ws.summary(base) == "branch aiwg/t-1: 1 file changed, +1 -1"
    assert ws.summary(base.but(state="empty")).startswith("no changes")
    assert "awaiting approval to merge" in ws.summary(base.but(state="awaiting_merge"))
    kept = ws.summary(base.but(state="kept", path=".aiwg/worktrees/t-1", size=ChangeSize(2, 5, 0)))
    assert kept == "branch aiwg/t-1, worktree kept at .aiwg/worktrees/t-1: 2 files changed, +5 -0"
    merged = base.but(state="merged", merged_into="main", merge_commit="0123456789abcdef")
    assert ws.summary(merged).startswith("merged into main (0123456789ab)")


def test_worktree_listings_and_statuses_are_read_as_git_prints_them() -> None:
    porcelain = ("worktree /p\nHEAD 1111\nbranch refs/heads/main\n\n"
                 "worktree /p/.aiwg/worktrees/t-1\nHEAD 2222\nbranch refs/heads/aiwg/t-1\n\n"
                 "worktree /elsewhere\nHEAD 3333\ndetached\n\n")
    assert ws.worktree_branches(porcelain) == {"main": "/p", "aiwg/t-1": "/p/.aiwg/worktrees/t-1"}
    assert ws.worktree_paths(porcelain) == ["/p", "/p/.aiwg/worktrees/t-1", "/elsewhere"]
    assert ws.status_paths(" M README\nA  new file.txt\nR  old.txt -> new.txt\n") == [
        "README", "new file.txt", "new.txt"]
    assert ws.merge_tree_conflicts("4b825dc\nshared.txt\nsrc/a.py\nshared.txt\n") == ["shared.txt", "src/a.py"]
    assert ws.listing([f"f{i}" for i in range(25)], limit=3) == "f0, f1, f2 and 22 more"


@pytest.mark.parametrize("text, expected", [
    ("Ada Lovelace <ada@example.org>", ("Ada Lovelace", "ada@example.org")),
    ("  bot <b@x>  ", ("bot", "b@x")),
])
def test_an_author_is_a_name_and_an_address(text: str, expected: tuple[str, str]) -> None:
    assert ws.parse_author(text) == expected


@pytest.mark.parametrize("text", ["ada", "<ada@example.org>", "Ada <>", "Ada <a b@c>", "Ada <x> <y>"])
def test_anything_else_is_refused_naming_the_key(text: str) -> None:
    with pytest.raises(WorkspaceError, match="tasks.commit_author"):
        ws.parse_author(text)
