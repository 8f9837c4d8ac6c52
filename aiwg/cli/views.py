# tests: tests/e2e/test_tasks.py, tests/test_cli_fast.py
"""What `aiwg task submit` asks for, and how `task submit`, `task list`, `task get`,
`task stats` and `event emit` print their results: shared by the click commands
and the fast path (aiwg/cli/fast.py), so both ask and print the same; nothing
here imports click."""

from __future__ import annotations

import time
from datetime import datetime

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any

from aiwg.cli.text import duration

STATES = ("awaiting_approval", "queued", "running", "completed", "failed", "cancelled", "timeout", "rejected")


def submit_params(prompt: str, *, priority: int, retries: int, require_approval: bool, timeout: float | None,
                  agent: str | None, isolate: bool | None, base: str | None,
                  executor: str | None = None) -> dict[str, Any]:
    """`task.submit`'s params for the options of `aiwg task submit` (a loop's aside)."""
    params: dict[str, Any] = {"prompt": prompt, "priority": priority, "source": "cli", "retries": retries}
    if require_approval:
        params["requireApproval"] = True
    if timeout is not None:
        params["timeout"] = timeout
    if agent:
        params["agent"] = agent
    if isolate is not None:
        params["isolate"] = isolate
    if base:
        params["base"] = base
    if executor:
        params["executor"] = executor
    return params


def submitted(result: dict[str, Any]) -> str:
    return f"Task submitted: {result['taskId']} ({result['state']})"


def published(result: dict[str, Any]) -> str:
    return f"published {result['topic']} (#{result['seq']})"


def task_list(tasks: list[dict[str, Any]], total: int, offset: int) -> tuple[list[str], str | None]:
    """The table's lines (stdout), and the footer that says there are more (stderr)."""
    if not tasks:
        return ["No tasks found" + (f" (there are {total}; --offset {offset} is past them)" if total else "")], None
    now = time.time()
    out: list[str] = []
    rows = [("ID", "STATE", "PRI", "SOURCE", "AGE", "DURATION", "PROMPT")]
    for t in tasks:
        created = _epoch(t["createdAt"])
        age = duration(now - created) if created else "-"
        took = duration(t["duration"] / 1000) if t.get("duration") is not None else "-"
        prompt = " ".join(t["prompt"].split())
        rows.append((t["id"], t["state"], str(t["priority"]), t["source"], age, took,
                     prompt if len(prompt) <= 50 else prompt[:49] + "…"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for row in rows:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6])
    shown_to = offset + len(tasks)
    if offset or shown_to < total:
        more = f"; next: --offset {shown_to}" if shown_to < total else ""
        return out, f"{offset + 1}–{shown_to} of {total}{more} (or --limit)"
    return out, None


def task_record(record: dict[str, Any]) -> str:
    """One task's full record for a person."""
    from aiwg.core.workspace_text import summary_text

    out: list[str] = []
    rows = [
        ("id", record["id"]), ("state", record["state"]), ("priority", record["priority"]),
        ("source", record["source"]), ("created", record["createdAt"]),
        ("started", record["startedAt"] or "-"), ("finished", record["completedAt"] or "-"),
        ("duration", duration(record["duration"] / 1000) if record["duration"] is not None else "-"),
        ("exit code", record["exitCode"] if record["exitCode"] is not None else "-"),
        ("attempts", record["attempts"]),
        ("output", f"{record['outputPath']} ({record['outputBytes']} bytes)"),
    ]
    if record.get("timeoutMinutes"):
        rows.append(("timeout", f"{record['timeoutMinutes']:g} min"))
    if record.get("costUsd") is not None:
        rows.append(("cost", f"${record['costUsd']:.4f}"))
    if record.get("sessionId"):
        rows.append(("session", record["sessionId"]))
    if record.get("error"):
        rows.append(("error", record["error"]))
    if record.get("workspace"):
        rows.append(("workspace", summary_text(record["workspace"])))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.append(f"{key + ':':<{width + 1}} {value}")
    out.append(f"{'prompt:':<{width + 1}} {record['prompt']}")
    loop = (record.get("metadata") or {}).get("loop")
    if isinstance(loop, dict):
        out.append(f"{'loop:':<{width + 1}} until `{loop.get('until')}` passes, at most "
                   f"{loop.get('maxIterations')} iteration(s)"
                   + (f", budget ${loop['budget']:g}" if loop.get("budget") else ""))
        out.extend(_iterations_table(record.get("iterations") or []))
    if record.get("result"):
        out.append("result:")
        out.append(record["result"])
    elif record.get("output"):
        out.append("output (tail):")
        out.append(record["output"].rstrip("\n"))
    return "\n".join(out)


def task_stats(result: dict[str, Any]) -> str:
    out: list[str] = []
    keys = ("total", *STATES, "finishing")
    width = max(len(k) for k in keys) + 1
    digits = max(len(str(result.get(k, 0))) for k in keys)
    for key in keys:
        if key in result or key != "finishing":
            out.append(f"{key + ':':<{width}} {result.get(key, 0):>{digits}}")
    return "\n".join(out)


def _iterations_table(iterations: list[dict[str, Any]]) -> list[str]:
    """One line per finished iteration: how the agent and the check did, what it cost."""
    if not iterations:
        return ["iterations: none finished yet"]
    rows = [("#", "AGENT", "CHECK", "COST", "TOTAL", "TIME", "HEAD", "CHANGED", "OUTCOME")]
    for it in iterations:
        agent = it.get("agent") or {}
        check = it.get("check") or {}
        after = ((it.get("git") or {}).get("after") or {})
        rows.append((
            str(it.get("iteration", "?")),
            _agent_cell(agent),
            _check_cell(check),
            f"${it['costUsd']:.4f}" if it.get("costUsd") is not None else "-",
            f"${it['totalCostUsd']:.4f}" if it.get("totalCostUsd") is not None else "-",
            duration(it.get("duration") or 0),
            (after.get("head") or "-")[:8] if after else "-",
            str(len(after.get("status") or [])) if after else "-",
            it.get("outcome") or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["iterations:"] + ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                              for row in rows]


def _agent_cell(agent: dict[str, Any]) -> str:
    if not agent:
        return "-"
    error = agent.get("error")
    if not error:
        return "ok"
    if "timed out" in error:
        return "timeout"
    if agent.get("signal") is not None:
        return f"signal({agent['signal']})"
    return f"fail({agent.get('exitCode')})"


def _check_cell(check: dict[str, Any]) -> str:
    if not check:
        return "-"
    if check.get("exitCode") == 0:
        return "pass"
    if check.get("timedOut"):
        return "timeout"
    if check.get("exitCode") is not None:
        return f"fail({check['exitCode']})"
    return "error"


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
