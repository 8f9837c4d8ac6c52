"""Isolated tasks: what the workspace step costs per task on a repository of
10,000 files, beside git doing the same alone (the floor), measured in the same run.

    .venv/bin/python bench/worktrees.py [--quick] [--json] [--files N] [--tasks N]

1. The step. Floor: what a script does for one task with git alone, one command
   after another: `git worktree add -b BRANCH PATH HEAD`, one file written,
   `git add -A`, `git commit`, `git worktree remove --force PATH`. Ours: the
   daemon's GitWorkspaces on the Twisted reactor: prepare (resolve the base, make
   the worktree and branch), the same file written, collect (stage, commit,
   remove the worktree, measure the branch with `git diff --shortstat`). Per task,
   the median of N; the ratio ours / floor.
   The two run in turn, a task of each, so that both meet the same state of the
   disk (a checkout of 10,000 files is mostly file-system work, and varies).
2. End to end. A real daemon runs N tasks one at a time whose agent writes one
   file (`sh -c`), isolated and not: submit → completed (the record final, so the
   branch collected) per task, medians, in turn with a floor task. The difference
   is what isolation adds to a task; it is set beside that floor.

Only local processes and a temporary repository are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import BenchDaemon, clean_env  # noqa: E402

IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def make_repository(path: Path, files: int) -> None:
    """`files` small files in directories of 100, committed once."""
    path.mkdir(parents=True)
    for i in range(files):
        directory = path / f"d{i // 100:03d}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{i % 100:02d}.txt").write_text(f"file {i}\n" * 4)
    env = {**os.environ, **IDENTITY}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "start"]):
        subprocess.run(argv, cwd=path, env=env, check=True, capture_output=True)


def floor_task(repo: Path, n: int) -> float:
    env = {**os.environ, **IDENTITY}
    worktree = repo / ".aiwg" / "worktrees" / f"floor-{n}"
    started = time.perf_counter()
    for argv in (["git", "worktree", "add", "-q", "-b", f"floor/{n}", str(worktree), "HEAD"],):
        subprocess.run(argv, cwd=repo, env=env, check=True, capture_output=True)
    (worktree / "change.txt").write_text(f"task {n}\n")
    subprocess.run(["git", "add", "-A"], cwd=worktree, env=env, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-q", "-m", f"task {n}"], cwd=worktree, env=env, check=True, capture_output=True)
    subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=repo, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def step_tasks(repo: Path, floor_repo: Path, count: int) -> tuple[list[float], list[float]]:
    """GitWorkspaces on the reactor, and the floor, one task after another in turn
    (so that both meet the same state of the disk); seconds per task of each."""
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from aiwg.core.workspaces import commit_message
    from aiwg.daemon.tasks.settings import IsolationSettings
    from aiwg.daemon.tasks.worktrees import GitWorkspaces

    settings = IsolationSettings(default=True, author=("bench", "bench@localhost"))
    step = GitWorkspaces(reactor=reactor, root=repo, environ=dict(os.environ), settings=lambda: settings)
    ours: list[float] = []
    floor: list[float] = []

    async def run() -> None:
        for n in range(count):
            floor.append(floor_task(floor_repo, n))  # blocks the reactor: nothing else runs meanwhile
            task_id = f"t-bench{n:05d}"
            started = time.perf_counter()
            record, cwd = await step.prepare(task_id, None, None)
            Path(cwd, "change.txt").write_text(f"task {n}\n")
            record = await step.collect(record, commit_message(task_id, "bench", "completed"), keep=False,
                                        final=True)
            ours.append(time.perf_counter() - started)
            assert record.state == "open" and record.size.files == 1, record

    failures: list[Any] = []
    reactor.callWhenRunning(lambda: ensureDeferred(run()).addErrback(failures.append).addBoth(
        lambda _: reactor.stop()))
    reactor.run()
    if failures:
        failures[0].raiseException()
    return ours, floor


def daemon_tasks(plain_repo: Path, isolated_repo: Path, floor_repo: Path, count: int
                 ) -> tuple[list[float], list[float], list[float]]:
    """Submit → completed through two real daemons, one isolating its tasks and one
    not, a task of each and one of the floor in turn; seconds per task of each."""
    from aiwg.client import DaemonClient

    def config(isolate: bool) -> dict[str, Any]:
        return {"daemon": {"max_parallel_actions": 1},
                "agent": {"command": ["sh", "-c", 'echo "$0" > "out-$$.txt"', "{prompt}"], "output": "text",
                          "end_of_options": False},
                "tasks": {"isolation": "worktree" if isolate else "none",
                          "commit_author": "bench <bench@localhost>"}}

    env = clean_env()
    daemons = [BenchDaemon(plain_repo, config(False), env), BenchDaemon(isolated_repo, config(True), env)]
    times: tuple[list[float], list[float], list[float]] = ([], [], [])
    try:
        clients = []
        for daemon in daemons:
            daemon.start()
            client = DaemonClient(daemon.project, socket_path=daemon.socket_path).connect()
            client.subscribe(["task:completed", "task:failed"])
            clients.append(client)
        for n in range(count):
            for client, spent in zip(clients, times):
                started = time.perf_counter()
                task_id = client.call("task.submit", prompt=f"task-{n}")["taskId"]
                event: dict[str, Any] = {}
                for event in client.events(timeout=60):
                    if event["payload"].get("taskId") == task_id:
                        break
                spent.append(time.perf_counter() - started)
                if event.get("topic") != "task:completed":
                    raise RuntimeError(f"task {task_id}: {event}")
            times[2].append(floor_task(floor_repo, 1000 + n))
        for client in clients:
            client.close()
    finally:
        for daemon in daemons:
            daemon.stop()
    return times


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tasks and files (a smoke run)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--tasks", type=int, default=None)
    options = parser.parse_args()
    files = options.files or (1000 if options.quick else 10_000)
    tasks = options.tasks or (5 if options.quick else 20)
    if shutil.which("git") is None:
        print("git is not installed", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="aiwg-bench-worktrees-"))
    try:
        results: dict[str, Any] = {"files": files, "tasks": tasks}
        floor_repo = base / "floor"
        make_repository(floor_repo, files)
        ours_repo = base / "ours"
        make_repository(ours_repo, files)
        ours, floor = step_tasks(ours_repo, floor_repo, tasks)
        results["step"] = {"floor_ms": median_ms(floor), "ours_ms": median_ms(ours),
                           "ratio": median_ms(ours) / median_ms(floor),
                           "floor_p90_ms": statistics.quantiles(floor, n=10)[-1] * 1000,
                           "ours_p90_ms": statistics.quantiles(ours, n=10)[-1] * 1000}
        plain_repo = base / "plain"
        make_repository(plain_repo, files)
        isolated_repo = base / "isolated"
        make_repository(isolated_repo, files)
        plain, isolated, floor2 = daemon_tasks(plain_repo, isolated_repo, floor_repo, tasks)
        added = median_ms(isolated) - median_ms(plain)
        results["daemon"] = {"plain_ms": median_ms(plain), "isolated_ms": median_ms(isolated),
                             "floor_ms": median_ms(floor2), "added_ms": added,
                             "added_to_floor": added / median_ms(floor2)}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if options.json:
        print(json.dumps(results, indent=2))
        return 0
    step, daemon = results["step"], results["daemon"]
    print(f"repository: {files} files; {tasks} tasks per side, one at a time; medians")
    print(f"1. workspace step per task: ours {step['ours_ms']:.1f} ms, floor (git alone) {step['floor_ms']:.1f} ms, "
          f"ratio {step['ratio']:.2f}x  (p90 {step['ours_p90_ms']:.1f} / {step['floor_p90_ms']:.1f} ms)")
    print(f"2. daemon, submit -> completed: plain {daemon['plain_ms']:.1f} ms, isolated {daemon['isolated_ms']:.1f} ms; "
          f"isolation adds {daemon['added_ms']:.1f} ms = {daemon['added_to_floor']:.2f}x the floor "
          f"({daemon['floor_ms']:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
