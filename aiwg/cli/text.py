# tests: tests/test_cli.py
"""Small text helpers of the CLI that the fast path (aiwg/cli/fast.py) shares with
the click commands: nothing here imports click."""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any


def json_text(value: Any) -> str:
    """What --json prints: indented, in the order given."""
    return json.dumps(value, indent=2, sort_keys=False, default=str)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def kv_lines(rows: list[tuple[str, Any]], indent: int = 2) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{' ' * indent}{k + ':':<{width + 1}} {v}" for k, v in rows)


def bridge_line(info: dict[str, Any]) -> str:
    """`connected (2-way, as @bot)`, `reconnecting (… ; next attempt in 4.0s)`."""
    words = [info.get("mode", "")] if info.get("mode") else []
    if info.get("detail"):
        words.append(str(info["detail"]))
    if info.get("nextAttemptIn") is not None:
        words.append(f"next attempt in {info['nextAttemptIn']}s")
    return info["state"] + (f" ({'; '.join(words)})" if words else "")
