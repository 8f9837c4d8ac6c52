"""Isolated tasks end to end: a real git repository, the real daemon and the fake
agent. Tasks run in worktrees of their own and end on branches of their own;
the main checkout is untouched until a merge; a merge that would conflict or
meets a dirty checkout changes nothing; a crash leaves the agent's edits on the
branch and no worktree behind; a loop commits each iteration."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, alive, wait_for

pytestmark = pytest.mark.e2e

FINISHED = ("completed", "failed", "timeout", "cancelled", "rejected")
IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(project: Project, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=project.root, env={**project.env, **IDENTITY},
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {result.stderr}")
    return result.stdout


def repository(project: Project, **tasks: Any) -> None:
    """A repository with two committed files, and the daemon's configuration."""
    (project.root / "shared.txt").write_text("base\n")
    (project.root / "README").write_text("a project\n")
    (project.root / ".gitignore").write_text("*.log\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start")
    config = {"daemon": {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1, "max_parallel_actions": 3},
              "agent": {"output": "claude-json"}, "tasks": {"isolation": "worktree", **tasks}}
    project.write_config(json.dumps(config))


def checkout_digest(root: Path) -> dict[str, str]:
    """Every file of the main checkout but the daemon's own directory, by content."""
    found = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", ".aiwg")]
        for name in files:
            path = Path(top) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def submit(project: Project, prompt: str, *extra: str) -> str:
    result = project.aiwg("task", "submit", prompt, *extra, "--json", check=True)
    return str(json.loads(result.stdout)["taskId"])


def get(project: Project, task_id: str) -> dict[str, Any]:
    return json.loads(project.aiwg("task", "get", task_id, "--json", check=True).stdout)  # type: ignore[no-any-return]


def ended(project: Project, task_id: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        record = get(project, task_id)
        workspace = record.get("workspace") or {}
        # Settled and collected: the end is recorded once the branch is.
        return record if record["state"] in FINISHED and workspace.get("state") not in ("active", "preparing") \
            else None
    return wait_for(done, timeout=timeout)  # type: ignore[no-any-return]


def status(project: Project) -> str:
    """`git status` of the main checkout, the daemon's own directory aside."""
    return git(project, "status", "--porcelain", "--", ".", ":(exclude).aiwg")


def worktrees(project: Project) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(project, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def test_three_parallel_tasks_on_one_file_end_on_three_branches_and_merge_one_at_a_time(project: Project) -> None:
    repository(project)
    project.start()
    before = checkout_digest(project.root)
    head = git(project, "rev-parse", "HEAD").strip()
    ids = [submit(project, f"@write:shared.txt={name} @append:notes/{name}.md=by-{name} @sleep:1")
           for name in ("A", "B", "C")]
    wait_for(lambda: len(project.fake.runs()) == 3, timeout=20)
    runs = project.fake.runs()
    # All three at once, each in its own worktree.
    assert max(r["started"] for r in runs) < min(r["started"] for r in runs) + 1.0
    assert sorted(r["cwd"] for r in runs) == sorted(str(project.root / ".aiwg" / "worktrees" / i) for i in ids)
    records = [ended(project, i) for i in ids]
    assert [r["state"] for r in records] == ["completed"] * 3

    for task_id, record, name in zip(ids, records, "ABC"):
        ws = record["workspace"]
        assert ws["branch"] == f"aiwg/{task_id}" and ws["state"] == "open", (ws, project.log_text())
        assert ws["base"] == head and ws["baseRef"] == "main" and ws["head"] != head
        assert (ws["filesChanged"], ws["insertions"], ws["deletions"]) == (2, 2, 1)
        assert git(project, "show", f"aiwg/{task_id}:shared.txt") == f"{name}\n"
        assert git(project, "rev-list", "--count", f"{head}..aiwg/{task_id}").strip() == "1"
        subject = git(project, "log", "-1", "--format=%s", f"aiwg/{task_id}")
        assert task_id in subject and "(completed)" in subject
    # The main checkout was never touched, and no worktree is left.
    assert checkout_digest(project.root) == before
    assert git(project, "rev-parse", "HEAD").strip() == head
    assert status(project) == ""
    assert worktrees(project) == [str(project.root)]

    diff = project.aiwg("task", "diff", ids[0], check=True).stdout
    assert "-base" in diff and "+A" in diff and "notes/A.md" in diff
    stat = project.aiwg("task", "diff", ids[0], "--stat", check=True).stdout
    assert "shared.txt" in stat and "2 files changed" in stat

    merged = project.aiwg("task", "merge", ids[0])
    assert merged.returncode == 0, merged.stderr
    assert (project.root / "shared.txt").read_text() == "A\n"
    assert (project.root / "notes" / "A.md").read_text() == "by-A\n"
    merge_head = git(project, "rev-parse", "HEAD").strip()
    assert get(project, ids[0])["workspace"]["state"] == "merged"
    assert get(project, ids[0])["workspace"]["mergeCommit"] == merge_head

    # The second one conflicts: refused, naming the file; nothing moves.
    tip = git(project, "rev-parse", f"aiwg/{ids[1]}").strip()
    refused = project.aiwg("task", "merge", ids[1])
    assert refused.returncode == 1
    assert "shared.txt" in refused.stderr and "conflict" in refused.stderr
    assert git(project, "rev-parse", "HEAD").strip() == merge_head
    assert git(project, "rev-parse", f"aiwg/{ids[1]}").strip() == tip
    assert status(project) == ""
    assert (project.root / "shared.txt").read_text() == "A\n"
    assert get(project, ids[1])["workspace"]["state"] == "open"

    # A dirty checkout: refused, naming the file.
    (project.root / "README").write_text("edited by a person\n")
    dirty = project.aiwg("task", "merge", ids[2], "--json")
    assert dirty.returncode == 1 and "README" in dirty.stderr and "uncommitted" in dirty.stderr
    assert json.loads(dirty.stdout)["error"]
    assert (project.root / "README").read_text() == "edited by a person\n"
    assert git(project, "rev-parse", "HEAD").strip() == merge_head
    git(project, "checkout", "--", "README")

    discarded = project.aiwg("task", "discard", ids[1])
    assert discarded.returncode == 0, discarded.stderr
    assert git(project, "branch", "--list", f"aiwg/{ids[1]}") == ""
    assert get(project, ids[1])["workspace"]["state"] == "discarded"
    again = project.aiwg("task", "discard", ids[1])
    assert again.returncode == 1 and "no branch" in again.stderr


def test_a_merge_can_go_into_another_branch_and_be_squashed(project: Project) -> None:
    repository(project)
    git(project, "branch", "release")
    project.start()
    task_id = submit(project, "@write:shared.txt=squashed")
    ended(project, task_id)
    merged = project.aiwg("task", "merge", task_id, "--into", "release", "--squash", "--json")
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout)["into"] == "release"
    assert git(project, "show", "release:shared.txt") == "squashed\n"
    assert git(project, "rev-list", "--count", "main..release").strip() == "1"  # one commit, no merge
    assert (project.root / "shared.txt").read_text() == "base\n"  # main's checkout is another branch
    assert worktrees(project) == [str(project.root)]


def test_a_task_with_no_changes_leaves_no_commit_and_no_branch(project: Project) -> None:
    repository(project)
    project.start()
    task_id = submit(project, "nothing to do")
    record = ended(project, task_id)
    assert record["state"] == "completed"
    assert record["workspace"]["state"] == "empty" and record["workspace"]["filesChanged"] == 0
    assert git(project, "branch", "--list", f"aiwg/{task_id}") == ""
    text = project.aiwg("task", "get", task_id, check=True).stdout
    assert "no changes" in text
    assert worktrees(project) == [str(project.root)]


def test_a_kill_9_leaves_the_agents_edits_on_the_branch_and_no_worktree(project: Project) -> None:
    repository(project)
    pid = project.start()
    task_id = submit(project, "@write:shared.txt=partial @append:new.txt=half-done @sleep:60")
    worktree = project.root / ".aiwg" / "worktrees" / task_id
    wait_for(lambda: (worktree / "new.txt").exists(), timeout=20)
    agent = project.fake.runs()[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), timeout=10)
    project.start()
    record = ended(project, task_id)
    assert record["state"] == "failed" and "interrupted" in (record["error"] or "")
    assert not alive(agent)
    ws = record["workspace"]
    assert ws["state"] == "open" and ws["filesChanged"] == 2
    assert git(project, "show", f"aiwg/{task_id}:shared.txt") == "partial\n"
    assert git(project, "show", f"aiwg/{task_id}:new.txt") == "half-done\n"
    assert "(interrupted)" in git(project, "log", "-1", "--format=%s", f"aiwg/{task_id}")
    assert worktrees(project) == [str(project.root)]
    assert not worktree.exists()
    assert not list((project.root / ".git").rglob("index.lock"))
    assert (project.root / "shared.txt").read_text() == "base\n"


def test_a_loop_leaves_one_commit_per_iteration(project: Project) -> None:
    repository(project)
    counter = project.root.parent / "check.count"
    check = project.root.parent / "check.sh"
    check.write_text(f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "{counter}"; '
                     '[ "$n" -ge 3 ]\n')
    project.start()
    result = project.aiwg("task", "submit", "@append:progress.txt=step", "--until", f"sh {check}",
                          "--max-iterations", "5", "--json", check=True)
    task_id = json.loads(result.stdout)["taskId"]
    record = ended(project, task_id, timeout=60)
    assert record["state"] == "completed"
    base = record["workspace"]["base"]
    subjects = git(project, "log", "--format=%s", f"{base}..aiwg/{task_id}").splitlines()
    assert len(subjects) == 3
    assert [s.split("(")[1].split(")")[0] for s in reversed(subjects)] == ["iteration 1", "iteration 2",
                                                                           "iteration 3"]
    assert git(project, "show", f"aiwg/{task_id}:progress.txt") == "step\nstep\nstep\n"
    # The check ran in the worktree too: every agent and check saw it as its cwd.
    assert {r["cwd"] for r in project.fake.runs()} == {str(project.root / ".aiwg" / "worktrees" / task_id)}
    assert record["workspace"]["filesChanged"] == 1 and record["workspace"]["insertions"] == 3
    assert worktrees(project) == [str(project.root)]


def test_what_cannot_be_isolated_fails_at_once_naming_the_cause(project: Project) -> None:
    project.write_config(json.dumps({"agent": {"output": "claude-json"}}))
    project.start()
    not_git = submit(project, "work", "--isolate")
    record = ended(project, not_git)
    assert record["state"] == "failed"
    assert "is not a git repository" in record["error"] and "--no-isolate" in record["error"]
    assert project.fake.runs() == []
    assert not (project.root / ".aiwg" / "worktrees").exists()

    unisolated = project.aiwg("task", "submit", "x", "--base", "main")
    assert unisolated.returncode != 0 and "base" in unisolated.stderr

    (project.root / "f.txt").write_text("x\n")
    git(project, "init", "-q", "-b", "main")
    unborn = submit(project, "work", "--isolate")
    assert "no commit yet" in ended(project, unborn)["error"]
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start")
    missing = submit(project, "work", "--isolate", "--base", "no-such-branch")
    assert "'no-such-branch' does not name a commit" in ended(project, missing)["error"]
    git(project, "checkout", "-q", "--detach")
    detached = submit(project, "work", "--isolate")
    assert "detached HEAD" in ended(project, detached)["error"]
    based = submit(project, "@write:f.txt=y", "--isolate", "--base", "main")
    assert ended(project, based)["state"] == "completed"
    assert project.fake.runs()[-1]["cwd"].endswith(f"/.aiwg/worktrees/{based}")
    assert worktrees(project) == [str(project.root)]
    status = json.loads(project.aiwg("daemon", "status", "--json", check=True).stdout)
    assert "isolation" in json.dumps(status)


def test_daemon_status_shows_live_worktrees_and_their_disk_use(project: Project) -> None:
    repository(project)
    project.start()
    task_id = submit(project, "@write:big.bin=x @sleep:30")
    wait_for(lambda: (project.root / ".aiwg" / "worktrees" / task_id / "big.bin").exists(), timeout=20)

    def shown() -> dict[str, Any] | None:
        status = json.loads(project.aiwg("daemon", "status", "--json", check=True).stdout)
        isolation = status["subsystems"]["supervisor"]["isolation"]
        return isolation if isolation["live"] == 1 and isolation["diskBytes"] else None
    isolation = wait_for(shown, timeout=10)
    assert isolation["worktrees"] == [task_id] and isolation["diskBytes"] > 0
    text = project.aiwg("daemon", "status", check=True).stdout
    assert "worktrees   1 on disk (" in text and "1 in use; tasks.isolation=worktree" in text
    project.aiwg("task", "cancel", task_id, check=True)
    record = ended(project, task_id)
    assert record["state"] == "cancelled" and record["workspace"]["state"] == "open"
    assert git(project, "show", f"aiwg/{task_id}:big.bin") == "x\n"


#: What the fake agent does for each prompt of the Parallel agents guide.
GUIDE_PROMPTS = {
    "Rewrite the greeting in README.md to be friendlier": "@write:README.md=Hello-there,-friend! @sleep:0.5",
    "Rewrite the greeting in README.md to be shorter": "@write:README.md=Hi @sleep:0.5",
    "Add a second line to the greeting in README.md": "@append:README.md=Welcome @sleep:0.5",
}


def test_the_parallel_agents_guide_runs_as_written(project: Project) -> None:
    """Every `$ aiwg` session of docs/parallel-agents.md, in order, in one project:
    the lines the guide shows are printed (`...` stands for lines it leaves out),
    and a command the guide shows failing (`aiwg: …`) exits 1."""
    import re
    import shlex

    from tests.e2e.test_docs_examples import ROOT, sessions, shape

    (project.root / "README.md").write_text("Hello\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start")
    project.write_config(json.dumps({"agent": {"output": "claude-json"}}))
    project.start()
    ids: dict[str, str] = {}

    def shaped(line: str) -> str:
        return shape(re.sub(r"\b[0-9a-f]{12}\b", "SHA", line))

    guide = (ROOT / "docs" / "parallel-agents.md").read_text()
    steps = [step for block in sessions(guide) for step in block]
    assert len(steps) >= 8
    for command, documented in steps:
        for doc_id, real in ids.items():
            command = command.replace(doc_id, real)
        argv = shlex.split(command)
        if argv[:3] == ["aiwg", "task", "submit"]:
            argv[3] = GUIDE_PROMPTS[argv[3]]
        if argv[:3] in (["aiwg", "task", "get"], ["aiwg", "task", "diff"], ["aiwg", "task", "merge"]):
            ended(project, argv[3])
        result = project.aiwg(*argv[1:])
        printed = (result.stdout + result.stderr).splitlines()
        failing = any(line.startswith("aiwg: ") for line in documented)
        assert result.returncode == (1 if failing else 0), (command, printed)
        for doc_line in documented:
            for doc_id in re.findall(r"\bt-[a-z0-9]{10}\b", doc_line):
                real = next((m for line in printed for m in re.findall(r"\bt-[a-z0-9]{10}\b", line)), None)
                if real and doc_id not in ids:
                    ids[doc_id] = real
        expected = [shaped(line) for line in documented if line.strip() and line.strip() != "..."]
        actual = [shaped(line) for line in printed if line.strip()]
        if "..." in (line.strip() for line in documented):
            assert all(line in actual for line in expected), (command, printed)
        else:
            assert sorted(actual) == sorted(expected), (command, printed)
    assert (project.root / "README.md").read_text() == "Hello-there,-friend!\n"


def test_auto_merge_merges_at_once_and_leaves_a_conflict_for_review(project: Project) -> None:
    repository(project, merge="auto")
    project.start()
    first = submit(project, "@write:shared.txt=first @sleep:0.5")
    second = submit(project, "@write:shared.txt=second @sleep:1")
    one, two = ended(project, first), ended(project, second)
    assert one["workspace"]["state"] == "merged" and one["workspace"]["mergedInto"] == "main"
    assert (project.root / "shared.txt").read_text() == "first\n"
    assert two["state"] == "completed" and two["workspace"]["state"] == "open"
    assert "not merged automatically" in two["workspace"]["note"] and "shared.txt" in two["workspace"]["note"]
    assert "conflicts" in two["workspace"]["note"]


def test_a_stop_collects_running_tasks_and_a_watched_worktree_fires_nothing(project: Project) -> None:
    """A graceful stop commits what a running isolated task had done and removes its
    worktree; the agent's edits in its worktree never reach the file watcher."""
    repository(project)
    config = json.loads(project.paths.config_file.read_text())
    config["watch"] = {"enabled": True, "debounce_ms": 50, "ignore": [".git/"]}  # as the guide advises
    config["rules"] = [{"id": "any-change", "trigger": {"type": "file_change", "pattern": "**"},
                        "action": {"type": "submit_task", "prompt": "a file changed", "isolate": False}}]
    project.write_config(json.dumps(config))
    project.start()
    task_id = submit(project, "@write:shared.txt=halfway @append:more.txt=x @sleep:60")
    wait_for(lambda: (project.root / ".aiwg" / "worktrees" / task_id / "more.txt").exists(), timeout=20)

    def fires() -> int:
        status = json.loads(project.aiwg("automation", "status", "--json", check=True).stdout)
        return int([r for r in status["rules"] if r["id"] == "any-change"][0]["fireCount"])
    time.sleep(0.5)  # ten times the debounce: the agent's writes would have fired by now
    assert fires() == 0
    (project.root / "notes.txt").write_text("a person's edit\n")  # the watcher does see the project
    wait_for(lambda: fires() == 1, timeout=10)
    project.aiwg("daemon", "stop", "--timeout", "30", check=True)
    assert worktrees(project) == [str(project.root)]
    assert git(project, "show", f"aiwg/{task_id}:more.txt") == "x\n"
    assert "(failed)" in git(project, "log", "-1", "--format=%s", f"aiwg/{task_id}")
    project.start()
    final = ended(project, task_id)
    assert final["state"] == "failed" and final["workspace"]["state"] == "open"
