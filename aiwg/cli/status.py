# tests: tests/e2e/test_lifecycle.py, tests/test_cli.py
"""`aiwg daemon status` as text: the daemon's lines, its health issues under
`health:`, and a line per subsystem (and per chat bridge)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any

from aiwg.cli.text import bridge_line, duration, kv_lines


def status_text(result: dict[str, Any]) -> str:
    """The text of a `daemon.status` result."""
    out = [f"aiwg daemon: running (pid {result['pid']})"]
    rows = [
        ("project", result.get("project")),
        ("uptime", f"{duration(result['uptime_seconds'])} (since {result['started_at']})"),
        ("health", result["health"]),
        ("socket", result.get("socket")),
        ("clients", result.get("clients")),
        ("config", f"{result['config']['path']} ({result['config']['hash']})"),
    ]
    lines = kv_lines(rows).splitlines()
    health_row = [key for key, _ in rows].index("health")
    issues = [f"    ! {issue}" for issue in result.get("health_issues", [])]
    out += lines[:health_row + 1] + issues + lines[health_row + 1:]
    out.append("  subsystems:")
    for name, info in result.get("subsystems", {}).items():
        out.append(f"    {name:<13} {_summary(info)}")
        if name == "messaging" and isinstance(info, dict) and info.get("enabled"):
            for platform, bridge in info.get("adapters", {}).items():
                if bridge.get("state") != "disabled":
                    out.append(f"      {platform:<11} {bridge_line(bridge)}")
        if name == "supervisor" and isinstance(info, dict) and isinstance(info.get("isolation"), dict):
            out.append(f"      {'worktrees':<11} {_worktrees_line(info['isolation'])}")
        if name == "supervisor" and isinstance(info, dict) and isinstance(info.get("executors"), dict):
            for executor, item in (info["executors"].get("remote") or {}).items():
                out.append(f"      {executor:<11} {_executor_line(item)}")
    return "\n".join(out)


def _executor_line(item: dict[str, Any]) -> str:
    """A remote executor: its broker, its workers, its tasks."""
    reach = {True: "reachable", False: f"UNREACHABLE ({item.get('error')})", None: "connecting"}
    workers = item.get("workers") or []
    slots = sum(int(w.get("concurrency") or 0) for w in workers)
    return (f"broker {item.get('broker')} {reach.get(item.get('reachable'), '?')}; {len(workers)} worker(s), "
            f"{slots} slot(s); {item.get('running', 0)} running, {item.get('published', 0)} sent, "
            f"{item.get('waiting', 0)} waiting")


def _worktrees_line(isolation: dict[str, Any]) -> str:
    """Live worktrees of isolated tasks and the disk they take."""
    size = isolation.get("diskBytes")
    shown = "size unknown" if size is None else f"{size / 1048576:.1f} MiB"
    return (f"{len(isolation.get('worktrees') or [])} on disk ({shown}), {isolation.get('live', 0)} in use; "
            f"tasks.isolation={isolation.get('default')}, tasks.merge={isolation.get('merge')}")


def _summary(info: Any) -> str:
    if not isinstance(info, dict):
        return str(info)
    if info.get("enabled") is False and len(info) == 1:
        return "disabled"
    return ", ".join(f"{k}={v}" for k, v in info.items() if not isinstance(v, (dict, list)))
