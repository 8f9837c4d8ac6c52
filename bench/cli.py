"""The everyday commands, whole process (start to exit), beside `python -c pass`
measured in the same run, run by run in turn.

    .venv/bin/python bench/cli.py [--runs N] [--json]

Each command runs against a real daemon in a temp project holding a few tasks,
as a user types it: `aiwg daemon status`, `task list`, `task get ID`,
`task stats`, `task submit PROMPT` (the daemon's agent is /bin/true) and
`event emit TOPIC`. Target (from the project's issue): each at most 40 ms
median, or at most 3.6x `python -c pass` where the machine is slower.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import AIWG, BenchDaemon, clean_env  # noqa: E402

WARMUP = 3


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aiwg-bench-cli-"))
    project = base / "p"
    project.mkdir()
    env = clean_env()
    daemon = BenchDaemon(project, {"agent": {"command": ["/bin/true"], "output": "text"}}, env)
    results: dict[str, dict[str, float]] = {}
    try:
        daemon.start()
        for n in range(5):
            subprocess.run([AIWG, "task", "submit", f"task {n}"], cwd=project, env=env, check=True,
                           capture_output=True)
        listed = subprocess.run([AIWG, "task", "list", "--json"], cwd=project, env=env, check=True,
                                capture_output=True, text=True)
        task_id = json.loads(listed.stdout)[0]["id"]
        commands = {
            "aiwg daemon status": [AIWG, "daemon", "status"],
            "aiwg task list": [AIWG, "task", "list"],
            "aiwg task get ID": [AIWG, "task", "get", task_id],
            "aiwg task stats": [AIWG, "task", "stats"],
            "aiwg task submit PROMPT": [AIWG, "task", "submit", "bench prompt"],
            "aiwg event emit TOPIC": [AIWG, "event", "emit", "bench:tick"],
        }
        floor_argv = [sys.executable, "-c", "pass"]
        samples: dict[str, list[float]] = {name: [] for name in commands}
        floors: list[float] = []
        for run in range(WARMUP + options.runs):
            for name, argv in commands.items():
                floor = timed(floor_argv, project, env)
                took = timed(argv, project, env)
                if run >= WARMUP:
                    floors.append(floor)
                    samples[name].append(took)
        floor_ms = statistics.median(floors) * 1000
        for name, values in samples.items():
            median = statistics.median(values) * 1000
            results[name] = {"median_ms": median, "p90_ms": statistics.quantiles(values, n=10)[-1] * 1000,
                             "ratio": median / floor_ms}
        results["python -c pass"] = {"median_ms": floor_ms,
                                     "p90_ms": statistics.quantiles(floors, n=10)[-1] * 1000, "ratio": 1.0}
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)
    if options.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"whole process, {options.runs} runs each, in turn with python -c pass; medians")
    print(f"{'command':28}{'median':>10}{'p90':>10}{'/ floor':>10}  target <= 40 ms or <= 3.6x")
    for name, row in results.items():
        ok = row["median_ms"] <= 40 or row["ratio"] <= 3.6 or name == "python -c pass"
        print(f"{name:28}{row['median_ms']:>8.1f}ms{row['p90_ms']:>8.1f}ms{row['ratio']:>9.2f}x  "
              f"{'' if name == 'python -c pass' else ('PASS' if ok else 'FAIL')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
