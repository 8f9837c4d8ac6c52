"""task.submit with a large store while agents run, beside ping in the same run.

    .venv/bin/python bench/submit_scale.py [--stored N] [--submits N] [--json]

The daemon's store holds N finished tasks (100,000 by default, written straight
into tasks.db as a long-lived project's would be), three agents run at a time
(`sleep 0.2` each, so every submit lands in a busy daemon with a growing
queue), and one connection submits one task after another, each after a ping:
the latency of each, p50 and p99, over the first and the last 500 submits too.

Target (from the project's issue): task.submit p50 <= 2 ms and p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import Daemon, _fill_store, pct  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--submits", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    config = {"daemon": {"max_parallel_actions": 3, "shutdown_grace_seconds": 1,
                         "retention": {"max_tasks": 0, "max_age_days": 0}},
              "agent": {"command": ["/bin/sh", "-c", "sleep 0.2", "{prompt}"], "output": "text"}}
    daemon = Daemon(config)
    try:
        daemon.start()
        daemon.stop()
        _fill_store(daemon.paths.tasks_db, options.stored)
        daemon.start()
        time.sleep(0.5)
        pings, submits = [], []
        with daemon.client(timeout=120) as client:
            for _ in range(200):
                client.call("ping")
            for i in range(options.submits):
                t = time.perf_counter()
                client.call("ping")
                pings.append(time.perf_counter() - t)
                t = time.perf_counter()
                client.call("task.submit", prompt=f"bench task {i}")
                submits.append(time.perf_counter() - t)
            running = client.call("task.stats").get("running", 0)
    finally:
        daemon.cleanup()
    first, last = submits[:500], submits[-500:]
    result = {
        "stored": options.stored, "submits": options.submits, "running_at_end": running,
        "submit_p50_ms": pct(submits, 0.5) * 1000, "submit_p99_ms": pct(submits, 0.99) * 1000,
        "first500_p50_ms": pct(first, 0.5) * 1000, "last500_p50_ms": pct(last, 0.5) * 1000,
        "first500_p99_ms": pct(first, 0.99) * 1000, "last500_p99_ms": pct(last, 0.99) * 1000,
        "ping_p50_ms": pct(pings, 0.5) * 1000, "ping_p99_ms": pct(pings, 0.99) * 1000,
    }
    if options.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{options.stored:,} tasks stored, agents running ({running} at the end); "
          f"{options.submits} submits on one connection, each after a ping")
    print(f"task.submit p50 {result['submit_p50_ms']:.2f} ms, p99 {result['submit_p99_ms']:.2f} ms "
          f"(first 500: {result['first500_p50_ms']:.2f} / {result['first500_p99_ms']:.2f}; "
          f"last 500: {result['last500_p50_ms']:.2f} / {result['last500_p99_ms']:.2f})  target <= 2 / <= 10 ms")
    print(f"ping        p50 {result['ping_p50_ms']:.2f} ms, p99 {result['ping_p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
