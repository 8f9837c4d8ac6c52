"""IPC against the Twisted floor with the neutral harness (../shared/bench/rpcbench.py),
in interleaved rounds, as ratios comparable with the AIWG Node daemon's figures.

    .venv/bin/python bench/rpc_rounds.py [--rounds 3] [--duration 3] [--harness PATH]

Each round measures, one after the other: our daemon, the floor (a bare Twisted
LineReceiver answering ping, the harness's floors/floor_twisted.py) and the
ceiling (bench/noop_server.c, built here with cc: a C epoll loop that answers each
line without parsing it, so that what the harness measures against it is the
harness's own limit), closed loop with 10 and 100 connections (calls/s, and the
share of one CPU the harness's client used: 100 % means the client, not the
server, set the figure), then ping round trips on one connection (p50). The ratio
of each round is daemon / floor; the report gives the median of the rounds' ratios
beside the AIWG Node daemon's (from the harness's README): 2.23x and 2.09x calls/s,
0.67x ping p50, and the ceiling's ratio: no server can be measured above it.
Targets (from the project's issue): >= 2.3x calls/s at 10 and 100 connections,
ping p50 <= 0.65x.

    --aiwg-node DIR   also measure the AIWG Node daemon in the same rounds, from a
                      checkout of AIWG at DIR (started with node
                      DIR/tools/daemon/index.mjs start in a project of its own)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIWG = str(Path(sys.executable).parent / "aiwg")
AIWG_NODE = {"conc10": 2.23, "conc100": 2.09, "ping_p50": 0.67}
TARGETS = {"conc10": 2.3, "conc100": 2.3, "ping_p50": 0.65}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def harness(path: Path, *args: str) -> tuple[list[dict], float]:
    """The harness's JSON lines, and the share of one CPU it used while it ran."""
    env = {**os.environ, "BENCHVENV": str(Path(sys.executable).parent.parent)}
    cpu, wall = children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=env, check=True)
    busy = (children_cpu() - cpu) / (time.perf_counter() - wall)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")], busy


def build_ceiling(work: Path) -> Path | None:
    """bench/noop_server.c built with the machine's C compiler, or None without one."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    binary = work / "noop_server"
    built = subprocess.run([compiler, "-O2", "-o", str(binary), str(ROOT / "bench" / "noop_server.c")],
                           capture_output=True, text=True)
    if built.returncode != 0:
        print(f"the ceiling (bench/noop_server.c) did not build with {compiler}; measuring without it:\n"
              f"{built.stderr.strip()}", file=sys.stderr)
        return None
    return binary


def write_profiles(work: Path, harness_path: Path, ceiling: Path | None,
                   aiwg_node: Path | None) -> dict[str, str]:
    project = work / "proj"
    project.mkdir()
    ours = work / "aiwg.json"
    ours.write_text(json.dumps({
        "name": "aiwg-daemon", "project_dir": str(project), "socket": ".aiwg/daemon/daemon.sock",
        "start_cmd": f"{AIWG} daemon start --project {project}", "stop_cmd": f"{AIWG} daemon stop --project {project}",
        "pid_file": ".aiwg/daemon.pid", "protocol": "ndjson", "ping": {"method": "ping", "params": None},
    }))
    targets = {"daemon": str(ours), "floor": str(harness_path.parent / "targets" / "floor-twisted.json")}
    if ceiling is not None:
        (work / "ceiling").mkdir()
        profile = work / "ceiling.json"
        profile.write_text(json.dumps({
            "name": "ceiling-noop-c", "project_dir": str(work / "ceiling"), "socket": "noop.sock",
            "start_cmd": f"exec {ceiling} noop.sock", "foreground": True, "protocol": "ndjson",
            "ping": {"method": "ping", "params": None},
        }))
        targets["ceiling"] = str(profile)
    if aiwg_node is not None:
        (work / "node-proj").mkdir()
        cli = f"node {aiwg_node / 'tools' / 'daemon' / 'index.mjs'}"
        profile = work / "aiwg-node.json"
        profile.write_text(json.dumps({
            "name": "aiwg-node", "project_dir": str(work / "node-proj"), "socket": ".aiwg/daemon/daemon.sock",
            "start_cmd": f"{cli} start", "stop_cmd": f"{cli} stop", "pid_file": ".aiwg/daemon.pid",
            "protocol": "ndjson", "ping": {"method": "ping", "params": None},
        }))
        targets["aiwg-node"] = str(profile)
    return targets


def summary_of(found: list[dict], what: str) -> dict:
    for record in found:
        if "summary" in record:
            return record
    raise RuntimeError(f"the harness printed no summary line for {what}")


def measure_round(harness_path: Path, targets: dict[str, str], duration: float) -> dict[str, dict[str, float]]:
    measured: dict[str, dict[str, float]] = {}
    for name, target in targets.items():
        row: dict[str, float] = {}
        for conns in (10, 100):
            found, busy = harness(harness_path, "conc", "-t", target, "--conns", str(conns), "--reps", "1",
                                  "--duration", str(duration))
            row[f"conc{conns}"] = summary_of(found, f"conc --conns {conns} on {name}")["calls_per_s"]
            row[f"client{conns}"] = busy
        found, _ = harness(harness_path, "ping", "-t", target, "--reps", "1")
        row["ping_p50"] = summary_of(found, f"ping on {name}")["p50_us"]
        measured[name] = row
    return measured


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict]:
    result: dict[str, dict] = {}
    for key in ("conc10", "conc100", "ping_p50"):
        row: dict = {"aiwg_node": AIWG_NODE[key], "target": TARGETS[key]}
        for name in rounds[0]:
            row[name] = statistics.median(r[name][key] for r in rounds)
            if name != "floor":
                row[f"{name}_ratios"] = [r[name][key] / r["floor"][key] for r in rounds]
                row[f"{name}_ratio"] = statistics.median(row[f"{name}_ratios"])
            if key.startswith("conc"):
                row[f"{name}_client_busy"] = statistics.median(r[name][f"client{key[4:]}"] for r in rounds)
        result[key] = row
    return result


def report(result: dict[str, dict], rounds: int) -> None:
    print(f"{rounds} interleaved rounds; medians; ratios are to the Twisted floor of the same round")
    for key, label, unit in (("conc10", "calls/s, 10 connections", ""), ("conc100", "calls/s, 100 connections", ""),
                             ("ping_p50", "ping p50, one connection", " us")):
        row = result[key]
        ceiling = (f"; ceiling {row['ceiling']:.1f}{unit} = {row['ceiling_ratio']:.2f}x" if "ceiling" in row else "")
        node = (f"; AIWG Node here {row['aiwg-node']:.1f}{unit} = {row['aiwg-node_ratio']:.2f}x "
                f"({', '.join(f'{r:.2f}' for r in row['aiwg-node_ratios'])})" if "aiwg-node" in row else "")
        print(f"{label:26} daemon {row['daemon']:>9.1f}{unit} floor {row['floor']:>9.1f}{unit}  "
              f"ratio {row['daemon_ratio']:.2f}x ({', '.join(f'{r:.2f}' for r in row['daemon_ratios'])})"
              f"{ceiling}{node}; AIWG Node (harness README) {row['aiwg_node']:.2f}x; target {row['target']:.2f}x")
        if key.startswith("conc"):
            shares = ", ".join(f"{name} {row[f'{name}_client_busy']:.0%}"
                               for name in ("daemon", "floor", "ceiling", "aiwg-node") if f"{name}_client_busy" in row)
            print(f"{'':26} the harness's client used one CPU: {shares}")
    if "ceiling" not in result["conc10"]:
        print("no C compiler here: the ceiling (bench/noop_server.c) was not measured")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared" / "bench" / "rpcbench.py")
    parser.add_argument("--aiwg-node", type=Path, default=None, metavar="DIR")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    if not options.harness.exists():
        print(f"the harness is not at {options.harness} (--harness PATH)", file=sys.stderr)
        return 2
    if options.aiwg_node is not None:
        if not (options.aiwg_node / "tools" / "daemon" / "index.mjs").is_file():
            print(f"--aiwg-node: {options.aiwg_node}/tools/daemon/index.mjs is missing (a checkout of AIWG?)",
                  file=sys.stderr)
            return 2
        if shutil.which("node") is None:
            print("--aiwg-node: no node on PATH", file=sys.stderr)
            return 2
        options.aiwg_node = options.aiwg_node.resolve()
    work = Path(tempfile.mkdtemp(prefix="aiwg-rpc-rounds-"))
    rounds: list[dict[str, dict[str, float]]] = []
    targets: dict[str, str] = {}
    try:
        targets = write_profiles(work, options.harness, build_ceiling(work), options.aiwg_node)
        for target in targets.values():
            harness(options.harness, "start", "-t", target)
        for _ in range(options.rounds):
            rounds.append(measure_round(options.harness, targets, options.duration))
    finally:
        for target in targets.values():
            subprocess.run([sys.executable, str(options.harness), "stop", "-t", target], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    result = summarise(rounds)
    if options.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, options.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
