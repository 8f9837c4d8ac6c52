"""What the benchmark scripts share: where the venv's programs are, progress
lines on stderr, a percentile, and a process's resident memory."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
