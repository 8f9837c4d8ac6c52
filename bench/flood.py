"""Agents that flood their output: what it costs the daemon, beside a floor.

    .venv/bin/python bench/flood.py [--mib N] [--agents 1,10,20] [--json]

Each agent writes N MiB (default 100) of text to stdout as fast as `yes | head`
can. For 1, 10 and 20 agents at once, the daemon (task_output_max_mb 10, so
the file stops growing and the rest is drained) is measured for:

* daemon CPU per MiB of agent output (all its threads);
* RSS before, at its peak, and 5 s after the agents ended;
* `ping` round trips on another connection while the agents run (p50, p99, max);
* follower lag: how long after an agent's last byte its `task:completed`
  event reaches a subscriber.

The floor, in the same run: a bare Twisted ProcessProtocol in its own process,
draining the same agents into files (capped likewise), with its CPU per MiB and
RSS, and the same ping measured against a bare Twisted line-echo server sharing
that process's reactor.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (PYTHON, BenchDaemon, clean_env, exit_on_term, pct, rss_mib, say,  # noqa: E402
                    schedstat_ns, timed_report)

FLOOD = "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c {bytes}"

FLOOR = r"""
import os, sys, time
from twisted.internet import reactor, protocol
from twisted.protocols.basic import LineReceiver

cap = 10 * 1024 * 1024
socket_path, count, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
started, ended = [], []

class Echo(LineReceiver):
    delimiter = b"\n"
    def lineReceived(self, line):
        self.sendLine(line)

class Drain(protocol.ProcessProtocol):
    def __init__(self, path):
        self.file = open(path, "wb")
        self.written = 0
    def outReceived(self, data):
        room = cap - self.written
        if room > 0:
            self.file.write(data[:room])
            self.written += min(room, len(data))
    errReceived = outReceived
    def processEnded(self, reason):
        self.file.close()
        ended.append(time.monotonic())
        if len(ended) == count:
            print("done", flush=True)

factory = protocol.ServerFactory()
factory.protocol = Echo
reactor.listenUNIX(socket_path, factory)

def go():
    for i in range(count):
        reactor.spawnProcess(Drain(f"{socket_path}.{i}.log"), "/bin/sh",
                             ["sh", "-c", sys.argv[4]], env=dict(os.environ))
print("ready", flush=True)
sys.stdin.readline()
reactor.callLater(0, go)
reactor.run()
"""


class Pinger(threading.Thread):
    """Sends a ping every 10 ms on one connection until stopped; keeps the round trips."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.times: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(self.path)
        sock.settimeout(30)
        reader = sock.makefile("rb")
        n = 0
        while not self.done.is_set():
            n += 1
            started = time.perf_counter()
            sock.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % n)
            reader.readline()
            self.times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        sock.close()


class Follower(threading.Thread):
    """Subscribed to task:output and task:completed, as `aiwg task get --follow` is:
    notes when each task's completion reaches it, and the output bytes it got."""

    def __init__(self, daemon: BenchDaemon) -> None:
        super().__init__(daemon=True)
        self.client = daemon.client(timeout=60)
        self.client.subscribe(["task:output", "task:completed", "task:failed"])
        self.completed_at: dict[str, float] = {}
        self.bytes = 0
        self.done = threading.Event()

    def run(self) -> None:
        for event in self.client.events(timeout=1.0 if self.done.is_set() else 60):
            payload = event.get("payload") or {}
            if event.get("topic") == "task:output":
                self.bytes += int(payload.get("bytes") or 0)
            else:
                self.completed_at[payload.get("taskId")] = time.time()
            if self.done.is_set() and not self.client.notifications:
                break
        self.client.close()


def cpu_seconds(pid: int) -> float:
    return schedstat_ns(pid) / 1e9


def measure_daemon(agents: int, nbytes: int, env: dict[str, str]) -> dict[str, Any]:
    project = Path(tempfile.mkdtemp(prefix="aiwgb-flood-"))
    config = {"daemon": {"max_parallel_actions": max(agents, 1), "task_output_max_mb": 10},
              "agent": {"command": ["sh", "-c", FLOOD.format(bytes=nbytes), "{prompt}"], "output": "text",
                        "end_of_options": False}}
    daemon = BenchDaemon(project, config, env)
    try:
        daemon.start()
        time.sleep(0.5)
        rss_before = rss_mib(daemon.pid)
        cpu_before = cpu_seconds(daemon.pid)
        pinger = Pinger(daemon.socket_path)
        pinger.start()
        follower = Follower(daemon)
        follower.start()
        time.sleep(0.3)
        pinger.times.clear()
        with daemon.client() as client:
            ids = [client.call("task.submit", prompt=f"flood {i}")["taskId"] for i in range(agents)]
        peak = rss_before
        lags: list[float] = []
        while True:
            peak = max(peak, rss_mib(daemon.pid))
            with daemon.client() as client:
                states = [client.call("task.get", taskId=t) for t in ids]
            if all(s["state"] not in ("queued", "running") for s in states):
                break
            time.sleep(0.05)
        pinger.done.set()
        pinger.join()
        wait_until = time.monotonic() + 60
        while len(follower.completed_at) < agents and time.monotonic() < wait_until:
            time.sleep(0.05)
        cpu = cpu_seconds(daemon.pid) - cpu_before
        follower.done.set()
        for state in states:
            finished = _epoch(state.get("completedAt"))
            arrived = follower.completed_at.get(state["id"])
            if finished is not None and arrived is not None:
                lags.append(max(0.0, (arrived - finished) * 1000))
        time.sleep(5)
        rss_after = rss_mib(daemon.pid)
        completed = sum(s["state"] == "completed" for s in states)
        return {"agents": agents, "completed": completed, "mib": agents * nbytes / 2**20,
                "cpu_ms_per_mib": cpu * 1000 / (agents * nbytes / 2**20),
                "rss_before": rss_before, "rss_peak": peak, "rss_after": rss_after,
                "ping_p50_ms": pct(pinger.times, 0.5), "ping_p99_ms": pct(pinger.times, 0.99),
                "ping_max_ms": max(pinger.times, default=float("nan")),
                "follower_lag_p50_ms": pct(lags, 0.5), "follower_lag_max_ms": max(lags, default=float("nan")),
                "follower_mib": follower.bytes / 2**20}
    finally:
        daemon.stop()
        shutil.rmtree(project, ignore_errors=True)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure_floor(agents: int, nbytes: int, env: dict[str, str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="aiwgb-floor-"))
    path = str(work / "echo.sock")
    proc = subprocess.Popen([PYTHON, "-c", FLOOR, path, str(agents), str(nbytes), FLOOD.format(bytes=nbytes)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        rss_before = rss_mib(proc.pid)
        cpu_before = cpu_seconds(proc.pid)
        pinger = Pinger(path)
        pinger.start()
        time.sleep(0.3)
        pinger.times.clear()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        peak = rss_before
        done = threading.Event()
        threading.Thread(target=lambda: (proc.stdout.readline(), done.set()), daemon=True).start()
        while not done.wait(0.05):
            peak = max(peak, rss_mib(proc.pid))
        pinger.done.set()
        pinger.join()
        cpu = cpu_seconds(proc.pid) - cpu_before
        time.sleep(5)
        return {"agents": agents, "mib": agents * nbytes / 2**20,
                "cpu_ms_per_mib": cpu * 1000 / (agents * nbytes / 2**20),
                "rss_before": rss_before, "rss_peak": peak, "rss_after": rss_mib(proc.pid),
                "ping_p50_ms": pct(pinger.times, 0.5), "ping_p99_ms": pct(pinger.times, 0.99),
                "ping_max_ms": max(pinger.times, default=float("nan"))}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def produce(mib: int, counts: list[int]) -> dict[str, Any]:
    env = clean_env()
    rows = []
    for count in counts:
        say(f"{count} agent(s) x {mib} MiB: the daemon")
        ours = measure_daemon(count, mib * 2**20, env)
        say(f"{count} agent(s) x {mib} MiB: the floor")
        floor = measure_floor(count, mib * 2**20, env)
        rows.append({"ours": ours, "floor": floor})
    return {"mib_per_agent": mib, "rows": rows}


def render(report: dict[str, Any]) -> str:
    lines = [f"Output floods: each agent writes {report['mib_per_agent']} MiB; task_output_max_mb 10",
             "", f"{'agents':>6} {'':6} {'CPU ms/MiB':>11} {'RSS before':>11} {'peak':>7} {'after':>7} "
                 f"{'ping p50':>9} {'p99':>7} {'max':>7}"]
    for row in report["rows"]:
        for name in ("ours", "floor"):
            r = row[name]
            lines.append(f"{r['agents']:>6} {name:6} {r['cpu_ms_per_mib']:>11.2f} {r['rss_before']:>10.1f}M "
                         f"{r['rss_peak']:>6.1f}M {r['rss_after']:>6.1f}M {r['ping_p50_ms']:>8.2f}m "
                         f"{r['ping_p99_ms']:>6.2f}m {r['ping_max_ms']:>6.1f}m")
        ours, floor = row["ours"], row["floor"]
        lines.append(f"{'':>6} {'ratio':6} {ours['cpu_ms_per_mib'] / floor['cpu_ms_per_mib']:>10.2f}x "
                     f"{'':>11} growth {ours['rss_peak'] - ours['rss_before']:.1f} MiB "
                     f"(floor {floor['rss_peak'] - floor['rss_before']:.1f}); completed {ours['completed']}"
                     f"/{ours['agents']}")
        if ours["follower_mib"] < ours["mib"] * 0.99:
            lines.append(f"{'':>6} {'follow':6} the follower was cut off after {ours['follower_mib']:.0f} of "
                         f"{ours['mib']:.0f} MiB (it fell more than 8 MiB behind: a client that does not keep up "
                         "is disconnected)")
        else:
            lines.append(f"{'':>6} {'follow':6} completion reached a follower {ours['follower_lag_p50_ms']:.0f} ms "
                         f"(median; max {ours['follower_lag_max_ms']:.0f} ms) after the task finished; it got "
                         f"all {ours['follower_mib']:.0f} MiB of output events")
    return "\n".join(lines)


def main() -> int:
    import argparse
    import signal

    signal.signal(signal.SIGTERM, exit_on_term)
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--agents", default="1,10,20")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.agents.split(",")]
    return timed_report(lambda: produce(args.mib, counts), render, args.json)


if __name__ == "__main__":
    sys.exit(main())
