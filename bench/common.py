"""What the benchmark scripts share: where the venv's programs are, progress
lines on stderr, a percentile, a process's resident memory and CPU time, how
busy the rest of the machine was, a real daemon to start and stop, and the
PASS/FAIL words of the reports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
AIWG = str(VENV_BIN / "aiwg") if (VENV_BIN / "aiwg").exists() else (shutil.which("aiwg") or "aiwg")


def say(message: str) -> None:
    """Progress, on stderr: stdout carries only the report."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) of `values`, by rank; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- CPU accounting (Linux /proc) --------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _cpu_ticks(stat_text: str) -> list[int]:
    """utime, stime, cutime, cstime of a /proc stat line (its fields after the name,
    which may hold spaces and parentheses)."""
    return [int(x) for x in stat_text.rsplit(")", 1)[1].split()[11:15]]


def cpu_ticks_with_children(pid: int) -> int:
    """utime + stime + cutime + cstime: the process and the children it has reaped."""
    return sum(_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()))


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process: every thread, those that have exited too
    (unlike a sum over /proc/PID/task), its children not."""
    return sum(_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())[:2]) / CLK_TCK


def schedstat_ns(pid: int) -> int:
    """CPU time of the process's live threads in ns (finer than clock ticks)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (utime + stime) of each live thread of `pid`, by "name/tid" (the main
    thread's tid is the pid)."""
    times: dict[str, float] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        times[f"{name}/{stat.parent.name}"] = sum(_cpu_ticks(text)[:2]) / CLK_TCK
    return times


class Interference:
    """CPU used by everything on the machine except the listed processes and the bench
    itself, over a window, in % of one core."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.perf_counter()
        self.machine = machine_jiffies()[0]
        self.own = self._own()

    def _own(self) -> float:
        ticks = sum(cpu_ticks_with_children(pid) for pid in self.pids)
        t = os.times()
        return ticks / CLK_TCK + t.user + t.system + t.children_user + t.children_system

    def other_pct(self) -> float:
        elapsed = time.perf_counter() - self.started
        busy = (machine_jiffies()[0] - self.machine) / CLK_TCK
        return max(0.0, 100 * (busy - (self._own() - self.own)) / elapsed)


# -- a real daemon, and the report ------------------------------------------------------


class BenchDaemon:
    """A real daemon, started with `aiwg daemon start` in a project dir it does not own,
    and stopped (killed if it will not stop) by `stop`, which is safe to call always.
    Both commands are timed (`start_seconds`, `stop_seconds`)."""

    def __init__(self, project: Path, config: dict[str, Any] | None, env: dict[str, str],
                 start_timeout: float = 120.0, stop_timeout: float = 30.0) -> None:
        from aiwg.paths import ProjectPaths

        self.project = project
        self.env = env
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.paths = ProjectPaths(project)
        self.paths.aiwg_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:  # None: no configuration file, the defaults
            self.paths.config_file.write_text(json.dumps(config))
        self.pid = 0
        self.attempted = False
        self.start_seconds = float("nan")
        self.stop_seconds = float("nan")

    @property
    def socket_path(self) -> str:
        return str(self.paths.bind_socket())

    def start(self) -> float:
        """Start it; return the wall time of the `aiwg daemon start` command."""
        self.attempted = True
        started = time.perf_counter()
        done = subprocess.run([AIWG, "daemon", "start", "--project", str(self.project)],
                              capture_output=True, text=True, env=self.env,
                              timeout=self.start_timeout, check=False)
        self.start_seconds = time.perf_counter() - started
        if self.paths.pid_file.exists():
            self.pid = int(self.paths.pid_file.read_text().strip() or 0)
        if done.returncode != 0:
            raise RuntimeError(f"aiwg daemon start failed ({done.returncode}): {done.stdout}{done.stderr}")
        if not self.pid:
            raise RuntimeError(f"no pid in {self.paths.pid_file} after start")
        return self.start_seconds

    def stop(self) -> None:
        from aiwg.instance import pid_alive

        if not self.attempted:
            return
        self.attempted = False
        if not self.pid and self.paths.pid_file.exists():  # a start that timed out
            self.pid = int(self.paths.pid_file.read_text().strip() or 0)
        ok = False
        started = time.perf_counter()
        try:
            done = subprocess.run([AIWG, "daemon", "stop", "--project", str(self.project),
                                   "--timeout", f"{self.stop_timeout:g}"],
                                  capture_output=True, text=True, env=self.env,
                                  timeout=2 * self.stop_timeout, check=False)
            ok = done.returncode == 0
            if not ok:
                say(f"aiwg daemon stop failed ({done.returncode}): {done.stdout}{done.stderr}")
        except subprocess.TimeoutExpired:
            say("aiwg daemon stop timed out")
        self.stop_seconds = time.perf_counter() - started
        if not ok and self.pid and pid_alive(self.pid):
            say(f"killing the daemon (pid {self.pid}) that this run started")
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid = 0

    def client(self, timeout: float = 30) -> Any:
        from aiwg.client import DaemonClient

        return DaemonClient(self.project, socket_path=self.paths.bind_socket(), timeout=timeout).connect()

    def status(self) -> dict[str, Any]:
        with self.client(timeout=10) as client:
            return client.call("daemon.status")


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} ({text})"


def timed_report(produce: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str],
                 as_json: bool) -> int:
    """Run a benchmark, then print its report (as text, or every number as JSON)
    with how long it took; the exit status of its command."""
    started = time.perf_counter()
    report = produce()
    report["bench_seconds"] = time.perf_counter() - started
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
        print(f"\n(bench took {report['bench_seconds']:.0f} s)")
    return 0


def exit_on_term(signum: int, frame: Any) -> None:
    """SIGTERM as SystemExit, so the benchmark's finally clauses stop what it started."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise SystemExit(128 + signum)


def clean_env(pycache: str | None = None) -> dict[str, str]:
    """The environment for the daemons and helpers a bench starts: none of the user's
    AIWG_* settings, and with `pycache` bytecode compiled once into that directory
    (off the source tree), whatever PYTHONDONTWRITEBYTECODE says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIWG_")}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env
