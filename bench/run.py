"""Benchmark the aiwg daemon against floors measured in the same run.

    .venv/bin/python bench/run.py            # about 100 s on 2 CPUs
    .venv/bin/python bench/run.py --quick    # about 25 s, one short round, noisier
    .venv/bin/python bench/run.py --json     # every number as JSON on stdout

What runs:

* the daemon: a real `aiwg daemon start --project DIR` in a fresh /tmp dir;
* the floor: bench/echo_server.py, a bare Twisted LineReceiver echo server on
  a Unix socket, in its own process, with the default reactor.

Both get the same client code (bench/loadgen.py) and the same request bytes.
Measured:

1. ping round trip over one persistent connection (blocking client);
2. closed-loop throughput and latency at 1, 10 and 100 connections, from an
   asyncio load generator in child processes (one, or two if a probe shows a
   single client process is the bottleneck);
3. whole-process `aiwg daemon ping` against `python -c pass`;
4. VmRSS of both servers, idle after start-up and after the load.

Measurements 1 and 2 are repeated in rounds (daemon and floor back to back,
alternating which goes first). Each figure is the median over the rounds and
each ratio the median of the per-round ratios, so a burst of unrelated load
on the machine moves one round, not the result. CPU used by other processes
is measured in every window; a load pair disturbed by it is run again (a few
times at most) and the report warns if disturbed windows remain.

Every process the bench starts gets a private bytecode cache under the temp
dir (PYTHONPYCACHEPREFIX), so results do not depend on whether the caller
sets PYTHONDONTWRITEBYTECODE, and nothing is written into the source tree.

Progress goes to stderr; the report (or JSON) to stdout. Both servers are
stopped and the temp dir removed on normal exit, errors, Ctrl-C and SIGTERM.
The exit status is 0
whether or not the targets are met: they are the project's goals, not asserts.
"""

from __future__ import annotations

import argparse
import glob
import math
import multiprocessing
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402

from common import AIWG, PYTHON, ROOT, BenchDaemon, exit_on_term, say, timed_report  # noqa: E402
from common import clean_env as common_clean_env  # noqa: E402
ECHO_SERVER = str(Path(__file__).resolve().parent / "echo_server.py")

#: The project's targets.
TARGET_P50_RATIO = 1.5
TARGET_PING_MS = 120.0
TARGET_RSS_MIB = 50.0

FULL = {
    "rounds": 5,
    "seq_count": 3000,
    "seq_warmup": 500,
    "concurrency": [1, 10, 100],
    "duration": 3.0,
    "warmup": 0.5,
    "probe_duration": 2.0,
    "probe_rounds": 2,
    "max_retries": 4,
    "process_runs": 30,
    "process_warmup": 3,
}
QUICK = {
    "rounds": 1,
    "seq_count": 1000,
    "seq_warmup": 200,
    "concurrency": [1, 10, 100],
    "duration": 1.0,
    "warmup": 0.3,
    "probe_duration": 1.0,
    "probe_rounds": 1,
    "max_retries": 1,
    "process_runs": 10,
    "process_warmup": 2,
}

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: A load window in which other processes used more CPU than this (percent of
#: one CPU) is disturbed: the pair is run again, up to max_retries times a run.
NOISY_OTHER_CPU_PCT = 25.0
SERVERS = ("daemon", "echo")  # "echo" is the floor


# -- numbers ------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise_us(values_us: list[float]) -> dict[str, float]:
    values = sorted(values_us)
    return {
        "n": len(values),
        "p50_us": percentile(values, 50),
        "p90_us": percentile(values, 90),
        "p99_us": percentile(values, 99),
        "mean_us": statistics.fmean(values) if values else float("nan"),
        "min_us": values[0] if values else float("nan"),
        "max_us": values[-1] if values else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def median_of(rounds: list[dict[str, Any]], keys: list[str]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in keys}


def paired_ratios(
    daemon_rounds: list[dict[str, Any]], floor_rounds: list[dict[str, Any]], keys: list[str]
) -> dict[str, Any]:
    """daemon/floor for each key: the median of the per-round ratios (each round
    runs the two servers back to back, so slow spells of the machine cancel
    out), and the per-round ratios themselves."""
    out: dict[str, Any] = {}
    for key in keys:
        per_round = [ratio(d[key], f[key]) for d, f in zip(daemon_rounds, floor_rounds)]
        out[key] = statistics.median(per_round)
        out[f"{key}_per_round"] = per_round
    return out


# -- /proc ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all threads, in seconds.

    From the scheduler's own accounting (/proc/PID/task/*/schedstat, in ns)
    where the kernel has it; /proc/PID/stat's tick-sampled utime+stime otherwise.
    """
    total = 0
    found = False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as handle:
                total += int(handle.read().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            pass
    if found:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent not idle, from /proc/stat, in seconds."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile in MiB, and the thread count."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024.0  # kB -> MiB
            elif key == "Threads":
                out[key] = int(value.split()[0])
    return out


def _run_text(argv: list[str]) -> str:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, cwd=str(ROOT), timeout=30
        ).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dirty = _run_text(["git", "status", "--porcelain", "--", "aiwg", "twisted"])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": _run_text([PYTHON, "-c", "import platform; print(platform.python_version())"]),
        "python_path": PYTHON,
        "twisted": _run_text([PYTHON, "-c", "import twisted; print(twisted.__version__)"]),
        "git_head": _run_text(["git", "rev-parse", "--short", "HEAD"]),
        "daemon_code_modified": bool(dirty),
        "loadavg_at_start": list(os.getloadavg()),
    }


# -- the servers ----------------------------------------------------------------

#: Set by run(): a private bytecode cache under the run's temp dir, so every
#: process the bench starts runs from .pyc files (as an installed package
#: does) without writing __pycache__ into the source tree, and whether or not
#: the calling environment sets PYTHONDONTWRITEBYTECODE.
PYCACHE_PREFIX: str | None = None


def clean_env(bytecode_cache: bool = True) -> dict[str, str]:
    return common_clean_env(PYCACHE_PREFIX if bytecode_cache else None)


def warm_bytecode_cache(scratch: Path) -> None:
    """Fill the private bytecode cache: the echo server's and the CLI's imports,
    and one throw-away daemon start and stop."""
    scratch.mkdir()
    subprocess.run(
        [PYTHON, "-c", "import twisted.internet.epollreactor, twisted.protocols.basic, "
         "aiwg.cli.ping, aiwg.cli.app, aiwg.cli.daemon"],
        env=clean_env(), check=True, timeout=120,
    )
    throwaway = Daemon(scratch)
    try:
        throwaway.start()
    finally:
        throwaway.stop()


class EchoServer:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.proc: subprocess.Popen[str] | None = None
        self.reactor = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, ECHO_SERVER, self.socket_path],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=clean_env(),
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=30):
                raise RuntimeError("the echo server did not report ready within 30 s")
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"the echo server failed to start: {line!r}")
        self.reactor = line.split(" ", 1)[1] if " " in line else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Daemon(BenchDaemon):
    """The daemon under test: no configuration file, the defaults."""

    def __init__(self, project: Path) -> None:
        super().__init__(project, None, clean_env(), start_timeout=90, stop_timeout=20)


# -- the measurements -------------------------------------------------------------


def measure_sequential(path: str, server_pid: int, count: int, warmup: int) -> dict[str, Any]:
    signal.alarm(120)  # the blocking client has no timeout of its own
    try:
        started = time.perf_counter()
        busy_start = machine_busy_seconds()
        server_start = cpu_seconds(server_pid)
        client_start = time.process_time()
        result = loadgen.sequential(path, count, warmup)
        client_cpu = time.process_time() - client_start
        server_cpu = cpu_seconds(server_pid) - server_start
        busy = machine_busy_seconds() - busy_start
        wall = time.perf_counter() - started
    finally:
        signal.alarm(0)
    out = summarise_us([ns / 1000.0 for ns in result["samples_ns"]])
    out["bad_replies"] = result["bad"]
    out["calls_per_s"] = count / (result["elapsed_ns"] / 1e9)
    out["reply_bytes"] = len(result["first_reply"].encode())
    out["other_cpu_pct"] = max(0.0, 100.0 * (busy - server_cpu - client_cpu) / wall)
    return out


def measure_load(
    path: str, server_pid: int, concurrency: int, procs: int, warmup: float, duration: float
) -> dict[str, Any]:
    """One closed-loop load point: `concurrency` connections spread over `procs` processes."""
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    context = multiprocessing.get_context("fork")
    workers = []
    try:
        for share in shares:
            parent, child = context.Pipe()
            process = context.Process(
                target=loadgen.load_worker, args=(child, path, share), daemon=True
            )
            process.start()
            workers.append((process, parent))
        for process, pipe in workers:
            if not pipe.poll(30):
                raise RuntimeError("a load worker did not connect within 30 s")
            message = pipe.recv()
            if message != "ready":
                raise RuntimeError(f"load worker failed: {message}")
        start_at = time.perf_counter() + 0.2
        for _, pipe in workers:
            pipe.send((start_at, warmup, duration))
        window_start = start_at + warmup
        time.sleep(max(0.0, window_start - time.perf_counter()))
        server_cpu_start = cpu_seconds(server_pid)
        busy_start = machine_busy_seconds()
        time.sleep(max(0.0, window_start + duration - time.perf_counter()))
        server_cpu = cpu_seconds(server_pid) - server_cpu_start
        busy = machine_busy_seconds() - busy_start
        results = []
        for _, pipe in workers:
            if not pipe.poll(duration + 60):
                raise RuntimeError("a load worker did not report")
            message = pipe.recv()
            if "error" in message:
                raise RuntimeError(f"load worker failed: {message['error']}")
            results.append(message)
    finally:
        for process, pipe in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            pipe.close()
    latencies = [s * 1e6 for r in results for s in r["latencies"]]
    out = summarise_us(latencies)
    calls = len(latencies)
    client_cpu = sum(r["cpu_seconds"] for r in results)
    out.update(
        {
            "concurrency": concurrency,
            "client_procs": procs,
            "duration_s": duration,
            "calls": calls,
            "calls_per_s": calls / duration,
            "bad_replies": sum(r["bad"] for r in results),
            "connections_lost": sum(r["lost"] for r in results),
            "server_cpu_pct": 100.0 * server_cpu / duration,
            "client_cpu_pct": 100.0 * client_cpu / duration,
            # Everything else on the machine: other processes, kernel threads.
            "other_cpu_pct": max(0.0, 100.0 * (busy - server_cpu - client_cpu) / duration),
            "server_cpu_us_per_call": 1e6 * server_cpu / calls if calls else float("nan"),
        }
    )
    return out


LOAD_KEYS = ["calls_per_s", "p50_us", "p99_us", "server_cpu_pct", "client_cpu_pct",
             "server_cpu_us_per_call", "other_cpu_pct"]
SEQ_KEYS = ["p50_us", "p99_us", "mean_us", "calls_per_s"]


def measure_processes(project: Path, runs: int, warmup: int) -> dict[str, Any]:
    """Wall time of whole commands, interleaved so drift hits all of them alike."""
    cached = clean_env()
    # The caller's environment, except that nothing may be written into the
    # source tree: aiwg's own modules are compiled from source on every run
    # unless the tree already has __pycache__ (stdlib and site-packages have theirs).
    uncached = clean_env(bytecode_cache=False)
    uncached["PYTHONDONTWRITEBYTECODE"] = "1"
    ping = [AIWG, "daemon", "ping", "--project", str(project)]
    commands = {
        "aiwg_ping": (ping, cached),
        "python_pass": ([PYTHON, "-c", "pass"], cached),
        # Not a floor, an explanation: interpreter plus the ping command's imports.
        "python_import_ping": ([PYTHON, "-c", "import aiwg.cli.ping"], cached),
        "aiwg_ping_no_bytecode_cache": (ping, uncached),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(warmup + runs):
        for name, (argv, env) in commands.items():
            started = time.perf_counter()
            done = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=30,
                check=False, cwd=str(ROOT),
            )
            elapsed = (time.perf_counter() - started) * 1000.0
            if done.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[:300]}"
                )
            if i >= warmup:
                times[name].append(elapsed)
    out: dict[str, Any] = {}
    for name, values in times.items():
        ordered = sorted(values)
        out[name] = {
            "runs": len(values),
            "median_ms": statistics.median(values),
            "p90_ms": percentile(ordered, 90),
            "min_ms": ordered[0],
            "max_ms": ordered[-1],
        }
    return out


# -- the run ------------------------------------------------------------------------


def run(settings: dict[str, Any], quick: bool) -> dict[str, Any]:
    global PYCACHE_PREFIX
    report: dict[str, Any] = {
        "quick": quick,
        "settings": settings,
        "machine": machine(),
        "request": loadgen.REQUEST.decode().strip(),
    }
    rounds = settings["rounds"]
    tmp = Path(tempfile.mkdtemp(prefix="aiwgb-", dir="/tmp"))
    project = tmp / "p"
    project.mkdir()
    PYCACHE_PREFIX = str(tmp / "pycache")
    report["environment"] = {
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "tree_has_aiwg_pycache": (ROOT / "aiwg" / "__pycache__").is_dir(),
    }
    echo = EchoServer(str(tmp / "echo.sock"))
    daemon = Daemon(project)
    try:
        say("warming a private bytecode cache (one throw-away daemon start/stop)")
        warm_bytecode_cache(tmp / "warm")
        say(f"starting the echo server and the daemon under {tmp}")
        echo.start()
        daemon.start()
        report["machine"]["echo_reactor"] = echo.reactor
        report["daemon_start_s"] = daemon.start_seconds
        servers = {"daemon": (daemon.socket_path, daemon.pid), "echo": (echo.socket_path, echo.pid)}
        time.sleep(1.0)
        rss: dict[str, Any] = {
            "daemon": {"idle_after_start": memory(daemon.pid)},
            "echo": {"idle_after_start": memory(echo.pid)},
        }

        say(f"1/4 sequential ping: {rounds} round(s) of {settings['seq_count']} requests "
            "on one connection per server")
        seq_rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
        for r in range(rounds):
            for name in (SERVERS if r % 2 == 0 else SERVERS[::-1]):
                path, pid = servers[name]
                seq_rounds[name].append(
                    measure_sequential(path, pid, settings["seq_count"], settings["seq_warmup"])
                )
        sequential: dict[str, Any] = {
            name: {**median_of(seq_rounds[name], SEQ_KEYS),
                   "reply_bytes": seq_rounds[name][0]["reply_bytes"],
                   "bad_replies": sum(x["bad_replies"] for x in seq_rounds[name]),
                   "max_other_cpu_pct": max(x["other_cpu_pct"] for x in seq_rounds[name]),
                   "rounds": seq_rounds[name]}
            for name in SERVERS
        }
        sequential["ratio"] = paired_ratios(seq_rounds["daemon"], seq_rounds["echo"], SEQ_KEYS)
        report["sequential"] = sequential

        say("2/4 client saturation probe: floor, 100 connections, 1 vs 2 client processes")
        probe_runs: dict[str, list[dict[str, Any]]] = {"1_procs": [], "2_procs": []}
        for r in range(settings["probe_rounds"]):
            for procs in ((1, 2) if r % 2 == 0 else (2, 1)):
                probe_runs[f"{procs}_procs"].append(measure_load(
                    echo.socket_path, echo.pid, 100, procs, settings["warmup"],
                    settings["probe_duration"],
                ))
        probe = {key: median_of(runs, LOAD_KEYS) for key, runs in probe_runs.items()}
        one, two = probe["1_procs"]["calls_per_s"], probe["2_procs"]["calls_per_s"]
        procs = 2 if two > one * 1.10 else 1
        report["probe"] = {
            "runs": probe,
            "rounds": probe_runs,
            "chosen_client_procs": procs,
            "reason": (
                f"2 client processes gave {ratio(two, one):.2f}x the calls/s of 1 against the floor"
                + (": one client process saturates first, so 2 are used" if procs == 2 else
                   " (< 1.10x): a second one only competes for the CPUs, so 1 is used")
            ),
        }

        load_rounds: dict[tuple[str, int], list[dict[str, Any]]] = {
            (name, c): [] for name in SERVERS for c in settings["concurrency"]
        }
        retries_left = settings["max_retries"]
        retried = 0
        for r in range(rounds):
            for concurrency in settings["concurrency"]:
                while True:
                    pair = {}
                    for name in (SERVERS if r % 2 == 0 else SERVERS[::-1]):
                        say(f"2/4 load, round {r + 1}/{rounds}: {name}, {concurrency} "
                            f"connection(s), {settings['duration']:g} s")
                        path, pid = servers[name]
                        pair[name] = measure_load(
                            path, pid, concurrency, procs if concurrency > 1 else 1,
                            settings["warmup"], settings["duration"],
                        )
                    noise = max(x["other_cpu_pct"] for x in pair.values())
                    if noise <= NOISY_OTHER_CPU_PCT or retries_left == 0:
                        break
                    retries_left -= 1
                    retried += 1
                    say(f"other processes used {noise:.0f}% CPU during that pair; running it again")
                for name in SERVERS:
                    load_rounds[name, concurrency].append(pair[name])
        report["load_pairs_retried"] = retried
        load = []
        for concurrency in settings["concurrency"]:
            point: dict[str, Any] = {"concurrency": concurrency,
                                     "client_procs": procs if concurrency > 1 else 1}
            for name in SERVERS:
                runs = load_rounds[name, concurrency]
                point[name] = {
                    **median_of(runs, LOAD_KEYS),
                    "max_other_cpu_pct": max(x["other_cpu_pct"] for x in runs),
                    "bad_replies": sum(x["bad_replies"] for x in runs),
                    "connections_lost": sum(x["connections_lost"] for x in runs),
                    "rounds": runs,
                }
            point["ratio"] = paired_ratios(
                load_rounds["daemon", concurrency], load_rounds["echo", concurrency],
                ["calls_per_s", "p50_us", "p99_us", "server_cpu_us_per_call"],
            )
            load.append(point)
        report["load"] = load

        say(f"3/4 whole-process times, {settings['process_runs']} runs of each command")
        report["process"] = measure_processes(
            project, settings["process_runs"], settings["process_warmup"]
        )

        say("4/4 memory after the load")
        time.sleep(1.0)
        rss["daemon"]["idle_after_load"] = memory(daemon.pid)
        rss["echo"]["idle_after_load"] = memory(echo.pid)
        report["rss"] = rss
        try:
            status = daemon.status()
            report["daemon_status_after"] = {
                "clients": status.get("clients"), "health": status.get("health"),
                "health_issues": status.get("health_issues", []),
            }
        except Exception as exc:  # informational only
            report["daemon_status_after"] = {"error": str(exc)}
    finally:
        say("stopping the daemon and the echo server")
        try:
            daemon.stop()
        finally:
            echo.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    report["daemon_stop_s"] = daemon.stop_seconds
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, limit: float, unit: str, ok: bool) -> None:
        out.append({"name": name, "value": value, "limit": limit, "unit": unit, "pass": ok})

    seq = report["sequential"]
    value = seq["ratio"]["p50_us"]
    add("ping p50 / floor p50, 1 connection, sequential blocking client",
        value, TARGET_P50_RATIO, "x", value <= TARGET_P50_RATIO)
    for point in report["load"]:
        value = point["ratio"]["p50_us"]
        add(f"ping p50 / floor p50, {point['concurrency']} connection(s), asyncio client",
            value, TARGET_P50_RATIO, "x", value <= TARGET_P50_RATIO)
    value = report["process"]["aiwg_ping"]["median_ms"]
    add("`aiwg daemon ping` whole process, median", value, TARGET_PING_MS, "ms",
        value < TARGET_PING_MS)
    for when in ("idle_after_start", "idle_after_load"):
        value = report["rss"]["daemon"][when]["VmRSS"]
        add(f"daemon VmRSS, {when.replace('_', ' ')}", value, TARGET_RSS_MIB, "MiB",
            value < TARGET_RSS_MIB)
    return out


# -- the report ---------------------------------------------------------------------


def _rounds_note(ratios: list[float]) -> str:
    return "  per round: " + " ".join(f"{r:.2f}" for r in ratios) if len(ratios) > 1 else ""


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    m = report["machine"]
    s = report["settings"]
    rounds = s["rounds"]
    add(f"aiwg-daemon benchmark{' (--quick)' if report['quick'] else ''}, "
        f"git {m['git_head']}{' + uncommitted daemon changes' if m['daemon_code_modified'] else ''}")
    add(f"  machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}, Twisted {m['twisted']}")
    add(f"  load average: {m['loadavg_at_start'][0]:.2f} at start, "
        f"{m['loadavg_at_end'][0]:.2f} at end (1-minute)")
    add(f"  floor:   bench/echo_server.py, LineReceiver echo, {m.get('echo_reactor', '?')}")
    add(f"  request: {report['request']}")
    if rounds > 1:
        add(f"  in 1 and 2 each figure is the median over {rounds} rounds, and each ratio the "
            "median of the per-round ratios (daemon and floor run back to back in a round)")
    add("")

    seq = report["sequential"]
    d, e = seq["daemon"], seq["echo"]
    add(f"1. Ping round trip, one persistent connection, {s['seq_count']} sequential requests "
        f"after {s['seq_warmup']} warm-up (blocking client)")
    add(f"   {'':<14}{'daemon':>10}{'floor':>10}{'ratio':>8}")
    for key, label in (("p50_us", "p50 (µs)"), ("p99_us", "p99 (µs)"), ("mean_us", "mean (µs)"),
                       ("calls_per_s", "calls/s")):
        add(f"   {label:<14}{d[key]:>10.1f}{e[key]:>10.1f}{seq['ratio'][key]:>7.2f}x")
    if rounds > 1:
        add(f"   p50 ratio{_rounds_note(seq['ratio']['p50_us_per_round'])}")
    seq_noise = max(d["max_other_cpu_pct"], e["max_other_cpu_pct"])
    add(f"   reply size: daemon {d['reply_bytes']} B, floor {e['reply_bytes']} B; "
        f"bad replies: {d['bad_replies'] + e['bad_replies']}; most CPU used by other "
        f"processes in any round: {seq_noise:.0f}%")
    if seq_noise > NOISY_OTHER_CPU_PCT:
        add("   WARNING: other processes were busy during this test: not trustworthy")
    add("")

    probe = report["probe"]
    add(f"2. Closed loop, {s['duration']:g} s per point after {s['warmup']:g} s warm-up; "
        "each connection sends its next request when its reply arrives")
    add(f"   client: asyncio (Protocol callbacks) in {probe['chosen_client_procs']} child "
        "process(es) for 10 and 100 connections, 1 for 1 connection")
    add(f"   probe:  {probe['reason']}")
    for key in ("1_procs", "2_procs"):
        p = probe["runs"][key]
        add(f"           {key.replace('_', ' ')}: {p['calls_per_s']:>6.0f} calls/s, "
            f"server CPU {p['server_cpu_pct']:.0f}%, client CPU {p['client_cpu_pct']:.0f}%, "
            f"other {p['other_cpu_pct']:.0f}%")
    add(f"   {'conns':>5} {'server':<7}{'calls/s':>9}{'p50 µs':>9}{'p99 µs':>9}"
        f"{'srv CPU':>9}{'cli CPU':>9}{'srv µs/call':>12}{'other CPU':>11}")
    for point in report["load"]:
        for name in SERVERS:
            p = point[name]
            add(f"   {point['concurrency']:>5} {('floor' if name == 'echo' else name):<7}"
                f"{p['calls_per_s']:>9.0f}{p['p50_us']:>9.1f}{p['p99_us']:>9.1f}"
                f"{p['server_cpu_pct']:>8.0f}%{p['client_cpu_pct']:>8.0f}%"
                f"{p['server_cpu_us_per_call']:>12.1f}{p['other_cpu_pct']:>10.0f}%")
        q = point["ratio"]
        add(f"   {'':>5} {'ratio':<7}{q['calls_per_s']:>8.2f}x"
            f"{q['p50_us']:>8.2f}x{q['p99_us']:>8.2f}x"
            f"{'':>18}{q['server_cpu_us_per_call']:>11.2f}x"
            f"{_rounds_note(q['p50_us_per_round']).replace('per round', 'p50 per round')}")
    problems = sum(point[n]["bad_replies"] + point[n]["connections_lost"]
                   for point in report["load"] for n in SERVERS)
    worst = max(point[n]["max_other_cpu_pct"] for point in report["load"] for n in SERVERS)
    add(f"   bad replies or dropped connections: {problems}; "
        f"most CPU used by other processes in any window kept: {worst:.0f}% (of {m['nproc']}00%); "
        f"pairs re-run because of it: {report['load_pairs_retried']}")
    if worst > NOISY_OTHER_CPU_PCT:
        add(f"   WARNING: other processes were busy during the load (up to {worst:.0f}% CPU): "
            "section 2 is not trustworthy; run again on a quiet machine")
    add("")

    proc = report["process"]
    env = report["environment"]
    add(f"3. Whole process, {proc['aiwg_ping']['runs']} runs each (interleaved, after "
        f"{s['process_warmup']} warm-up runs)")
    add(f"   {'':<44}{'median ms':>10}{'p90 ms':>9}{'min ms':>9}")
    rows = (("aiwg_ping", "aiwg daemon ping --project DIR"),
            ("python_pass", "floor: python -c pass (venv python)"),
            ("python_import_ping", "info: python -c 'import aiwg.cli.ping'"),
            ("aiwg_ping_no_bytecode_cache", "info: aiwg daemon ping, aiwg not byte-compiled"))
    for key, label in rows:
        r = proc[key]
        add(f"   {label:<44}{r['median_ms']:>10.1f}{r['p90_ms']:>9.1f}{r['min_ms']:>9.1f}")
    add(f"   ratio aiwg ping / floor: median "
        f"{ratio(proc['aiwg_ping']['median_ms'], proc['python_pass']['median_ms']):.2f}x, "
        f"difference {proc['aiwg_ping']['median_ms'] - proc['python_pass']['median_ms']:.1f} ms")
    add("   (all rows but the last use a bytecode cache the bench fills first; the last runs as "
        f"this shell would: PYTHONDONTWRITEBYTECODE={env['PYTHONDONTWRITEBYTECODE']}, aiwg/__pycache__ "
        f"{'present' if env['tree_has_aiwg_pycache'] else 'absent'})")
    add("")

    rss = report["rss"]
    add("4. Memory, from /proc/PID/status (MiB)")
    add(f"   {'':<24}{'VmRSS':>8}{'RssAnon':>9}{'VmHWM':>8}{'threads':>9}")
    for name in SERVERS:
        for when in ("idle_after_start", "idle_after_load"):
            r = rss[name][when]
            label = (f"{'floor' if name == 'echo' else name}, "
                     f"{when.replace('idle_', '').replace('_', ' ')}")
            add(f"   {label:<24}{r['VmRSS']:>8.1f}{r.get('RssAnon', float('nan')):>9.1f}"
                f"{r['VmHWM']:>8.1f}{r.get('Threads', 0):>9.0f}")
    ratio_rss = ratio(rss["daemon"]["idle_after_load"]["VmRSS"],
                      rss["echo"]["idle_after_load"]["VmRSS"])
    add(f"   daemon / floor VmRSS after the load: {ratio_rss:.2f}x")
    after = report.get("daemon_status_after", {})
    if "clients" in after:
        add(f"   daemon.status after the load: clients={after['clients']} (the status query's own "
            f"connection included), health={after['health']}")
        for issue in after.get("health_issues", []):
            add(f"     ({issue})")
    add(f"   aiwg daemon start took {report['daemon_start_s']:.2f} s, "
        f"stop {report['daemon_stop_s']:.2f} s")
    add("")

    add("Targets")
    for t in report["targets"]:
        verdict = "PASS" if t["pass"] else "FAIL"
        limit = f"≤ {t['limit']:g}" if t["unit"] == "x" else f"< {t['limit']:g}"
        add(f"   [{verdict}] {t['name']}: {t['value']:.2f} {t['unit']} "
            f"(target {limit} {t['unit']})")
    return "\n".join(lines)


def _raise_timeout(signum: int, frame: Any) -> None:
    raise TimeoutError("a sequential measurement took more than 120 s")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.signal(signal.SIGTERM, exit_on_term)  # the finally clauses stop both servers
    parser = argparse.ArgumentParser(description="Benchmark the aiwg daemon against floors "
                                     "measured in the same run.")
    parser.add_argument("--quick", action="store_true", help="one short round (noisier numbers)")
    parser.add_argument("--json", action="store_true", help="print every number as JSON")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    return timed_report(lambda: run(settings, args.quick), render, args.json)


if __name__ == "__main__":
    sys.exit(main())
