"""IPC against the Twisted floor with the neutral harness (../shared/bench/rpcbench.py),
in interleaved rounds, as ratios comparable with the AIWG Node daemon's figures.

    .venv/bin/python bench/rpc_rounds.py [--rounds 3] [--duration 3] [--harness PATH]

Each round measures, one after the other: our daemon and the floor (a bare Twisted
LineReceiver answering ping, the harness's floors/floor_twisted.py), closed loop
with 10 and 100 connections (calls/s), then ping round trips on one connection
(p50). The ratio of each round is daemon / floor; the report gives the median of
the rounds' ratios beside the AIWG Node daemon's (from the harness's README):
2.23x and 2.09x calls/s, 0.67x ping p50. Targets (from the project's issue):
>= 2.3x calls/s at 10 and 100 connections, ping p50 <= 0.65x.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIWG = str(Path(sys.executable).parent / "aiwg")
AIWG_NODE = {"conc10": 2.23, "conc100": 2.09, "ping_p50": 0.67}


def harness(path: Path, *args: str) -> list[dict]:
    env = {**os.environ, "BENCHVENV": str(Path(sys.executable).parent.parent)}
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=env, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared" / "bench" / "rpcbench.py")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    if not options.harness.exists():
        print(f"the harness is not at {options.harness} (--harness PATH)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="aiwg-rpc-rounds-"))
    project = work / "proj"
    project.mkdir()
    ours = work / "aiwg.json"
    ours.write_text(json.dumps({
        "name": "aiwg-daemon", "project_dir": str(project), "socket": ".aiwg/daemon/daemon.sock",
        "start_cmd": f"{AIWG} daemon start --project {project}", "stop_cmd": f"{AIWG} daemon stop --project {project}",
        "pid_file": ".aiwg/daemon.pid", "protocol": "ndjson", "ping": {"method": "ping", "params": None},
    }))
    floor = options.harness.parent / "targets" / "floor-twisted.json"
    targets = {"daemon": str(ours), "floor": str(floor)}
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for target in targets.values():
            harness(options.harness, "start", "-t", target)
        for _ in range(options.rounds):
            measured: dict[str, dict[str, float]] = {}
            for name, target in targets.items():
                found = harness(options.harness, "conc", "-t", target, "--conns", "10,100", "--reps", "1",
                                "--duration", str(options.duration))
                row = {f"conc{r['conns']}": r["calls_per_s"] for r in found if "summary" in r}
                ping = [r for r in harness(options.harness, "ping", "-t", target, "--reps", "1") if "summary" in r]
                row["ping_p50"] = ping[0]["p50_us"]
                measured[name] = row
            rounds.append(measured)
    finally:
        for target in targets.values():
            subprocess.run([sys.executable, str(options.harness), "stop", "-t", target], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    result = {}
    for key in ("conc10", "conc100", "ping_p50"):
        ratios = [r["daemon"][key] / r["floor"][key] for r in rounds]
        result[key] = {"daemon": statistics.median(r["daemon"][key] for r in rounds),
                       "floor": statistics.median(r["floor"][key] for r in rounds),
                       "ratio": statistics.median(ratios), "ratios": ratios, "aiwg_node": AIWG_NODE[key]}
    if options.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{options.rounds} interleaved rounds; medians; ratios are daemon / Twisted floor of the same round")
    for key, label, unit in (("conc10", "calls/s, 10 connections", ""), ("conc100", "calls/s, 100 connections", ""),
                             ("ping_p50", "ping p50, one connection", " us")):
        row = result[key]
        print(f"{label:28} {row['daemon']:>10.1f}{unit} floor {row['floor']:>10.1f}{unit}  "
              f"ratio {row['ratio']:.2f}x ({', '.join(f'{r:.2f}' for r in row['ratios'])}); "
              f"AIWG Node {row['aiwg_node']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
