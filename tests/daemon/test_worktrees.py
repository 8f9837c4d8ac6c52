"""The workspace step with real git on the real reactor: a worktree made and
collected, a project in a subdirectory of its repository, an earlier attempt's
branch carried on, the commit's author, a lock held by another git, a stale
lock, a branch with no change, and merges that are refused."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from aiwg.core.workspaces import commit_message
from aiwg.daemon.tasks.branches import Branches
from aiwg.daemon.tasks.git import Git, git_environment, lock_path
from aiwg.daemon.tasks.settings import IsolationSettings
from aiwg.daemon.tasks.worktrees import GitWorkspaces, MergeRefused, WorkspaceFailed

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **IDENTITY}, check=True,
                          capture_output=True, text=True).stdout


def repository(path: Path) -> Path:
    (path / "src").mkdir(parents=True)
    (path / "src" / "a.txt").write_text("a\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "start")
    return path


def workspaces(root: Path, **settings: object) -> GitWorkspaces:
    chosen = IsolationSettings(default=True, **settings)  # type: ignore[arg-type]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    environ["HOME"] = str(root.parent)  # no ~/.gitconfig: git has no identity of its own
    return GitWorkspaces(reactor=reactor, root=root, environ=environ, settings=lambda: chosen)


@pytest_twisted.ensureDeferred
async def test_a_worktree_is_made_worked_in_and_collected_onto_its_branch(tmp_path: Path) -> None:
    root = repository(tmp_path / "repo")
    step = workspaces(root)
    record, cwd = await step.prepare("t-one", None, None)
    assert cwd == str(root / ".aiwg" / "worktrees" / "t-one") and record.state == "active"
    assert record.base_ref == "main" and record.base == git(root, "rev-parse", "HEAD").strip()
    assert git(root, "status", "--porcelain") == ""  # the worktrees directory ignores itself
    Path(cwd, "src", "a.txt").write_text("changed\n")
    Path(cwd, "new.txt").write_text("new\n")
    Path(cwd, "build.log").write_text("ignored?\n")
    (root / ".gitignore").write_text("")  # the main checkout's own files are not the task's
    collected = await step.collect(record, commit_message("t-one", "do it", "completed"), keep=False, final=True)
    assert collected.state == "open" and collected.path is None
    assert (collected.size.files, collected.size.insertions, collected.size.deletions) == (3, 3, 1)
    assert not (root / ".aiwg" / "worktrees" / "t-one").exists()
    assert git(root, "show", "aiwg/t-one:src/a.txt") == "changed\n"
    # Who made the commit: git had no identity, so the daemon's own.
    assert git(root, "log", "-1", "--format=%an <%ae>", "aiwg/t-one").strip() == "aiwg-daemon <aiwg-daemon@localhost>"
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1


@pytest_twisted.ensureDeferred
async def test_the_author_setting_and_a_project_in_a_subdirectory(tmp_path: Path) -> None:
    top = repository(tmp_path / "repo")
    root = top / "src"  # the daemon's project is a directory inside the repository
    step = workspaces(root, author=("Ada", "ada@example.org"))
    record, cwd = await step.prepare("t-sub", None, None)
    assert cwd == str(root / ".aiwg" / "worktrees" / "t-sub" / "src")
    Path(cwd, "a.txt").write_text("from the subdirectory\n")
    collected = await step.collect(record, "msg", keep=False, final=True)
    assert git(top, "show", "aiwg/t-sub:src/a.txt") == "from the subdirectory\n"
    assert git(top, "log", "-1", "--format=%an <%ae>|%cn", "aiwg/t-sub").strip() == "Ada <ada@example.org>|Ada"
    assert collected.size.files == 1


@pytest_twisted.ensureDeferred
async def test_an_earlier_attempts_branch_is_carried_on(tmp_path: Path) -> None:
    root = repository(tmp_path / "repo")
    step = workspaces(root)
    record, cwd = await step.prepare("t-again", None, None)
    Path(cwd, "first.txt").write_text("1\n")
    first = await step.collect(record, "interrupted", keep=False, final=False)
    assert first.state == "open"
    again, cwd = await step.prepare("t-again", None, first)
    assert again.base == record.base and Path(cwd, "first.txt").read_text() == "1\n"
    Path(cwd, "second.txt").write_text("2\n")
    done = await step.collect(again, "completed", keep=False, final=True)
    assert done.size.files == 2
    assert git(root, "rev-list", "--count", f"{record.base}..aiwg/t-again").strip() == "2"


@pytest_twisted.ensureDeferred
async def test_no_change_leaves_no_commit_and_no_branch_and_a_kept_worktree_stays(tmp_path: Path) -> None:
    root = repository(tmp_path / "repo")
    step = workspaces(root)
    record, _ = await step.prepare("t-idle", None, None)
    idle = await step.collect(record, "completed", keep=False, final=True)
    assert idle.state == "empty" and idle.head == record.base
    assert git(root, "branch", "--list", "aiwg/t-idle") == ""
    record, cwd = await step.prepare("t-kept", None, None)
    Path(cwd, "x.txt").write_text("x\n")
    kept = await step.collect(record, "failed", keep=True, final=True)
    assert kept.state == "kept" and kept.path == ".aiwg/worktrees/t-kept" and Path(cwd, "x.txt").exists()
    assert git(root, "status", "--porcelain", "--", ".", ":(exclude).aiwg") == ""
    assert git(root, "show", "aiwg/t-kept:x.txt") == "x\n"  # committed all the same
    gone = await Branches(step).discard("t-kept", kept)
    assert gone.state == "discarded" and not Path(cwd).exists()
    assert git(root, "branch", "--list", "aiwg/t-kept") == ""


@pytest_twisted.ensureDeferred
async def test_what_cannot_be_prepared_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkspaceFailed, match="is not a git repository"):
        await workspaces(plain).prepare("t-x", None, None)
    root = repository(tmp_path / "repo")
    with pytest.raises(WorkspaceFailed, match="'nope' does not name a commit"):
        await workspaces(root).prepare("t-x", "nope", None)
    with pytest.raises(WorkspaceFailed, match="tasks.branch_prefix"):
        await workspaces(root, branch_prefix="bad prefix/").prepare("t-x", None, None)
    git(root, "branch", "aiwg/t-taken")
    with pytest.raises(WorkspaceFailed, match="already exists"):
        await workspaces(root).prepare("t-taken", None, None)
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1


@pytest_twisted.ensureDeferred
async def test_a_lock_held_by_another_git_is_waited_for(tmp_path: Path) -> None:
    root = repository(tmp_path / "repo")
    lock = root / ".git" / "index.lock"
    lock.write_text("")
    runner = Git(reactor, git_environment(os.environ))
    (root / "src" / "a.txt").write_text("b\n")
    started = time.monotonic()
    freed = deferLater(reactor, 0.3, lock.unlink)
    await runner.run("add", "-A", cwd=str(root))
    await freed
    assert time.monotonic() - started >= 0.3
    assert "src/a.txt" in git(root, "diff", "--cached", "--name-only")


@pytest_twisted.ensureDeferred
async def test_a_stale_index_lock_in_a_worktree_is_removed_before_collecting(tmp_path: Path) -> None:
    root = repository(tmp_path / "repo")
    step = workspaces(root)
    record, cwd = await step.prepare("t-stale", None, None)
    Path(cwd, "work.txt").write_text("w\n")
    lock = Path(lock_path(cwd) or "")
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    collected = await step.collect(record, "interrupted", keep=False, final=False)
    assert collected.size.files == 1 and not lock.exists()


@pytest_twisted.ensureDeferred
async def test_merges_are_refused_without_changing_anything(tmp_path: Path) -> None:
    root = repository(tmp_path / "repo")
    step = workspaces(root)
    branches = Branches(step)
    records = []
    for name in ("t-left", "t-right"):
        record, cwd = await step.prepare(name, None, None)
        Path(cwd, "src", "a.txt").write_text(f"{name}\n")
        records.append(await step.collect(record, name, keep=False, final=True))
    merged = await branches.merge("t-left", records[0], into=None, squash=False, message="Merge t-left")
    assert merged.state == "merged" and merged.merged_into == "main"
    head = git(root, "rev-parse", "HEAD").strip()
    with pytest.raises(MergeRefused, match="conflicts with main in src/a.txt") as refused:
        await branches.merge("t-right", records[1], into=None, squash=False, message="Merge t-right")
    assert refused.value.files == ["src/a.txt"]
    assert git(root, "rev-parse", "HEAD").strip() == head and git(root, "status", "--porcelain",
                                                                   "--untracked-files=no") == ""
    with pytest.raises(MergeRefused, match="already merged"):
        await branches.merge("t-left", records[0], into=None, squash=False, message="again")
    with pytest.raises(MergeRefused, match="no branch 'nowhere'"):
        await branches.merge("t-right", records[1], into="nowhere", squash=False, message="m")
    diff = await branches.diff("t-right", records[1], stat=True)
    assert "src/a.txt" in diff["diff"] and diff["branch"] == "aiwg/t-right"
