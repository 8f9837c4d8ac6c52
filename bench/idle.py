"""An idle daemon: how often it wakes and how much CPU it uses when nothing happens,
beside a bare Twisted reactor doing nothing, measured over the same window.

    .venv/bin/python bench/idle.py [--window SECONDS] [--json]

The daemon runs the default configuration plus a watch of the project and ten
schedule jobs (none due in the window), as a user's would. After it has settled
(5 s), both processes are sampled over the window (60 s by default):

* CPU ticks (utime + stime of all threads, /proc/PID/stat; 100 a second here);
* wake-ups: voluntary context switches of the reactor thread (the main thread,
  /proc/PID/task/PID/status), and of all threads together.

Two floors run over the same window: a bare Twisted reactor doing nothing, and one
that does what a heartbeat must (two small files written and renamed into place
every 30 s): a rename may wait for the file system's journal, which is a
voluntary context switch the daemon's heartbeat cannot avoid either.

Target (from the project's issue): at most 2 ticks and at most one reactor wake-up
per heartbeat (30 s by default) over 60 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import BenchDaemon, clean_env  # noqa: E402

SETTLE_SECONDS = 5.0
#: The second floor: a bare reactor that does what a heartbeat must, write two small
#: files into place (written, renamed over the old ones) every 30 s.
BEATING_FLOOR = """
import os, sys
from twisted.internet import reactor, task
directory = sys.argv[1]
os.makedirs(directory, exist_ok=True)
def beat():
    for name in ("heartbeat", "state.json"):
        tmp = os.path.join(directory, "." + name + ".tmp")
        with open(tmp, "w") as f:
            f.write("{}" * 200)
        os.rename(tmp, os.path.join(directory, name))
task.LoopingCall(beat).start(30.0, now=True)
reactor.run()
"""


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def switches(pid: int) -> tuple[int, int]:
    """Voluntary context switches: of the main thread, and of every thread."""
    main = total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                count = int(line.split()[1])
                total += count
                if task.name == str(pid):
                    main = count
    return main, total


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def sample(pids: dict[str, int], window: float) -> dict[str, dict[str, Any]]:
    before = {name: (ticks(pid), switches(pid)) for name, pid in pids.items()}
    time.sleep(window)
    out = {}
    for name, pid in pids.items():
        t0, (m0, a0) = before[name]
        m1, a1 = switches(pid)
        out[name] = {"ticks": ticks(pid) - t0, "reactor_wakeups": m1 - m0, "all_wakeups": a1 - a0,
                     "threads": threads(pid)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aiwg-bench-idle-"))
    project = base / "p"
    (project / "src").mkdir(parents=True)
    config = {
        "watch": {"enabled": True, "paths": ["."], "ignore": [".git/"]},
        "schedule": {"enabled": True, "jobs": [
            {"name": f"job-{i}", "cron": f"{i} 3 * * *", "action": "health-check"} for i in range(10)]},
    }
    daemon = BenchDaemon(project, config, clean_env())
    floor = subprocess.Popen([sys.executable, "-c", "from twisted.internet import reactor; reactor.run()"],
                             env=clean_env())
    beating = subprocess.Popen([sys.executable, "-c", BEATING_FLOOR, str(base / "beat")], env=clean_env())
    try:
        daemon.start()
        time.sleep(SETTLE_SECONDS)
        heartbeat = 30.0
        result = {"window_s": options.window, "heartbeat_s": heartbeat,
                  **sample({"daemon": daemon.pid, "floor": floor.pid, "beating": beating.pid}, options.window)}
    finally:
        daemon.stop()
        for process in (floor, beating):
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    per = options.window / result["heartbeat_s"]
    result["targets"] = {"ticks_max": 2, "reactor_wakeups_max": per}
    if options.json:
        print(json.dumps(result, indent=2))
        return 0
    d, f, b = result["daemon"], result["floor"], result["beating"]
    print(f"idle over {options.window:.0f} s (default config + a watch + 10 schedule jobs; heartbeat 30 s)")
    print(f"{'':24}{'daemon':>10}{'floor':>10}{'floor+beat':>12}  target")
    for label, key, target in (("CPU ticks", "ticks", "<= 2"), ("reactor wake-ups", "reactor_wakeups", f"<= {per:g}"),
                               ("wake-ups, all threads", "all_wakeups", ""), ("threads", "threads", "")):
        print(f"{label:24}{d[key]:>10}{f[key]:>10}{b[key]:>12}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
