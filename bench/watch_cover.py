"""What keeping ignored trees out of the kernel costs, and saves, against watchdog's
stock recursive watch (the floor), on the same tree in the same run.

    .venv/bin/python bench/watch_cover.py [--json]

A project-like tree: src/ with 40 packages of 5 directories (a `__pycache__` in
each package), docs/, and node_modules/ with 1,000 packages of 4 directories.
Each arrangement is measured in a fresh process, three rounds interleaved:
kernel watches, threads, time from nothing to watching (walk, schedule, start)
and RSS added.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = r"""
import json, os, sys, threading, time
from aiwg import procfs
from aiwg.daemon.watch.observers import TreeWatch, native_observer

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

class Nothing:
    def dispatch(self, event):
        pass

root, prunes = sys.argv[1], sys.argv[2] == "pruned"
ignored = lambda path: os.path.basename(path) in ("node_modules", "__pycache__")
import watchdog.observers, watchdog.events  # imported before the clock starts, as in the daemon
before_rss, before_threads = rss(), threading.active_count()
started = time.perf_counter()
tree = TreeWatch(native_observer(), prunes=prunes)
tree.add(root, Nothing(), ignored)
tree.observer.start()
elapsed = time.perf_counter() - started
print(json.dumps({"watches": procfs.inotify_watch_count(), "threads": threading.active_count() - before_threads,
                  "ms": elapsed * 1000, "rss_kib": (rss() - before_rss) // 1024, "scheduled": tree.watch_count}))
tree.observer.stop()
tree.observer.join()
"""


def build(root: Path) -> None:
    for p in range(40):
        for d in range(5):
            (root / "src" / f"pkg{p}" / f"mod{d}").mkdir(parents=True)
            (root / "src" / f"pkg{p}" / f"mod{d}" / "x.py").write_text("x")
        (root / "src" / f"pkg{p}" / "__pycache__").mkdir()
    (root / "docs").mkdir()
    for p in range(1000):
        (root / "node_modules" / f"dep{p}" / "lib" / "a" / "b").mkdir(parents=True)


def run(root: Path, kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(root), kind], check=True, capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        rounds: dict[str, list[dict]] = {"pruned": [], "stock": []}
        for _ in range(3):
            for kind in rounds:
                rounds[kind].append(run(root, kind))
    result = {}
    for kind, found in rounds.items():
        result[kind] = {key: statistics.median(r[key] for r in found) for key in found[0]}
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
        return
    print("tree: src/ 40 packages x 5 dirs (+ __pycache__), docs/, node_modules/ 1,000 packages x 4 dirs")
    print(f"{'':28}{'pruned (ours)':>16}{'stock (floor)':>16}{'ratio':>8}")
    for key, label in [("watches", "kernel watches"), ("scheduled", "watchdog watches (threads)"),
                       ("threads", "threads added"), ("ms", "ms to watching"), ("rss_kib", "RSS added, KiB")]:
        ours, floor = result["pruned"][key], result["stock"][key]
        ratio = f"{ours / floor:.2f}x" if floor else "-"
        print(f"{label:28}{ours:>16,.0f}{floor:>16,.0f}{ratio:>8}")


if __name__ == "__main__":
    main()
