"""The Celery executor beside the local one, in the same run: the latency from a
submit's answer to the agent's start, and the throughput of a batch of short
tasks through 2 workers x 2 slots against the local executor with 4 slots
(plain, and isolated in worktrees, which is what a remote task always is). Also
what a daemon without `executors` pays for the feature: its start time and RSS
beside one that has the section, and the modules it imports (none of Celery,
kombu or redis), read from `python -X importtime` of a foreground start.

    .venv/bin/python bench/remote.py [--tasks 100] [--latency 20] [--json]

Everything is real and on loopback: a redis-server started here, two
`aiwg worker` processes, a bare repository as git_remote. The agent is a shell
that records when it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import AIWG, BenchDaemon, clean_env, pct, rss_mib, say  # noqa: E402

AGENT = ["/bin/sh", "-c", 'date +%s.%N > "$BENCH_STARTS/$AIWG_TASK_ID"', "{prompt}"]
IDENTITY = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
            "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def repository(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "README").write_text("bench\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", *args], cwd=path, check=True, env={**os.environ, **IDENTITY})


def config(slots: int, broker: str | None, remote: Path | None, isolated: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"daemon": {"max_parallel_actions": slots},
                           "agent": {"command": AGENT, "output": "text", "env": {"BENCH_STARTS": "${BENCH_STARTS}"}},
                           "tasks": {"isolation": "worktree" if isolated else "none"}}
    if broker:
        out["executors"] = {"celery": {"broker": broker, "git_remote": str(remote)}}
    return out


def run_batch(daemon: BenchDaemon, count: int, executor: str | None, starts: Path) -> dict[str, Any]:
    """`count` tasks at once: tasks/s until the last is recorded completed."""
    params = {"executor": executor} if executor else {}
    with daemon.client(timeout=300) as client:
        before = client.call("task.stats")["completed"]
        started = time.perf_counter()
        client.call_many([("task.submit", {"prompt": f"t{i}", **params}) for i in range(count)])
        deadline = time.monotonic() + 600
        while client.call("task.stats")["completed"] < before + count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{executor or 'local'}: the batch did not complete")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    return {"tasks_per_s": count / elapsed, "elapsed_s": elapsed}


def run_latency(daemon: BenchDaemon, count: int, executor: str | None, starts: Path) -> list[float]:
    """One task at a time: seconds from the submit's answer to the agent's start."""
    params = {"executor": executor} if executor else {}
    out = []
    with daemon.client(timeout=120) as client:
        for i in range(count):
            answered = time.time()
            task_id = client.call("task.submit", prompt=f"l{i}", **params)["taskId"]
            record = starts / task_id
            deadline = time.monotonic() + 60
            while not record.exists() or not record.read_text().strip():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"task {task_id} did not start: {client.call('task.get', taskId=task_id)}")
                time.sleep(0.002)
            out.append(float(record.read_text()) - answered)
            while client.call("task.get", taskId=task_id)["state"] not in ("completed", "failed"):
                time.sleep(0.005)
    return out


def imported_by_a_daemon(project: Path, env: dict[str, str]) -> list[str]:
    """Modules of Celery, kombu and redis a daemon without `executors` imports by
    the time it answers (python -X importtime of a foreground start)."""
    proc = subprocess.Popen([AIWG, "daemon", "start", "--foreground", "--project", str(project)],
                            env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        from aiwg.client import DaemonClient

        deadline = time.monotonic() + 60
        while True:
            try:
                with DaemonClient(project, timeout=5).connect() as client:
                    client.call("daemon.status")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    names = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")]
    return sorted({n for n in names if n.split(".")[0] in ("celery", "kombu", "redis", "billiard")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="aiwg-bench-remote-"))
    starts = base / "starts"
    starts.mkdir()
    env = {**clean_env(), "BENCH_STARTS": str(starts), **IDENTITY}
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    procs: list[subprocess.Popen[bytes]] = []
    daemons: list[BenchDaemon] = []
    result: dict[str, Any] = {}
    try:
        procs.append(subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(base)], stdout=subprocess.DEVNULL))
        remote = base / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
        for name in ("w1", "w2"):
            home = base / name
            home.mkdir()
            procs.append(subprocess.Popen([AIWG, "worker", "--broker", broker, "--concurrency", "2", "--cache",
                                           str(home / "cache"), "--name", f"{name}@bench"], cwd=home,
                                          env={**env, "HOME": str(home)}, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        sides = {"local": (config(4, None, None), None), "local_isolated": (config(4, None, None, True), None),
                 "celery": (config(4, broker, remote), "celery")}
        made = {}
        for name, (conf, _) in sides.items():
            repository(base / name)
            made[name] = BenchDaemon(base / name, conf, env)
            daemons.append(made[name])
            made[name].start()
        deadline = time.monotonic() + 60
        while len((made["celery"].status()["subsystems"]["supervisor"]["executors"]["remote"]["celery"]
                   .get("workers") or [])) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not show up")
            time.sleep(0.1)
        say("latency (submit -> agent start), one task at a time")
        latency = {name: run_latency(made[name], options.latency, executor, starts)
                   for name, (_, executor) in sides.items()}
        say(f"throughput, {options.tasks} tasks at once")
        batches: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for round_ in range(3):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                batches[name].append(run_batch(made[name], options.tasks, sides[name][1], starts))
        result["latency_ms"] = {name: {"p50": 1000 * statistics.median(v), "p90": 1000 * pct(v, 90)}
                                for name, v in latency.items()}
        result["throughput_tasks_per_s"] = {name: statistics.median(b["tasks_per_s"] for b in runs)
                                            for name, runs in batches.items()}
        result["rss_mib"] = {name: rss_mib(d.pid) for name, d in made.items()}
        result["start_s"] = {name: d.start_seconds for name, d in made.items()}
        for d in daemons:
            d.stop()
        lone = base / "lone"
        repository(lone)
        (lone / ".aiwg").mkdir()
        result["imported_without_executors"] = imported_by_a_daemon(lone, env)
    finally:
        for d in daemons:
            d.stop()
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM) if proc.pid != procs[0].pid else proc.terminate()
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    if options.json:
        print(json.dumps(result, indent=2))
        return 0
    t = result["throughput_tasks_per_s"]
    print(f"latency submit -> agent start (ms, p50 / p90), {options.latency} tasks one at a time:")
    for name, v in result["latency_ms"].items():
        print(f"  {name:16} {v['p50']:8.1f} {v['p90']:8.1f}")
    print(f"throughput of {options.tasks} tasks (median of 3 rounds):")
    for name in t:
        print(f"  {name:16} {t[name]:8.1f} tasks/s   {t[name] / t['local']:.2f}x local")
    print("daemon start (s) and RSS after the runs (MiB):")
    for name in result["start_s"]:
        print(f"  {name:16} {result['start_s'][name]:8.2f} {result['rss_mib'][name]:8.1f}")
    print(f"modules of celery/kombu/redis a daemon without executors imports: "
          f"{result['imported_without_executors'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
