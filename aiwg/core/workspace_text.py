# tests: tests/core/test_workspaces.py
"""An isolated task's workspace in one line, from its wire form (`workspace` of a
task record): for the daemon's messages and for `aiwg task get`, which prints it
without importing the rest of the core (the CLI's fast path)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any, Mapping


def summary_text(data: Mapping[str, Any]) -> str:
    """Where the work is and how big it is: `branch aiwg/t-1: 2 files changed, +5 -1`."""
    state = data.get("state") or "open"
    branch = data.get("branch") or "?"
    if state == "empty":
        return "no changes (no commit; the branch was removed)"
    files = data.get("filesChanged") or 0
    change = f"{files} file{'s' if files != 1 else ''} changed, +{data.get('insertions') or 0} -{data.get('deletions') or 0}"
    where = {
        "preparing": f"branch {branch} (its worktree is being prepared)",
        "active": f"branch {branch} (the agent works in {data.get('path')})",
        "open": f"branch {branch}",
        "kept": f"branch {branch}, worktree kept at {data.get('path')}",
        "awaiting_merge": f"branch {branch}, awaiting approval to merge",
        "merged": f"merged into {data.get('mergedInto')} ({(data.get('mergeCommit') or '')[:12]})",
        "discarded": f"branch {branch} discarded",
    }.get(state, f"branch {branch}")
    return f"{where}: {change}" if state not in ("preparing", "discarded") else where
