# tests: tests/daemon/test_supervisor.py, tests/e2e/test_tasks.py
"""The supervisor's part of `daemon.status`, `task.stats` and state.json: counts,
and short views of the running and queued tasks (AIWG's field names)."""

from __future__ import annotations

from typing import Any

from aiwg.core.timefmt import iso_utc


def stats(sup: Any) -> dict[str, int]:
    """Counts by state, where `running` is agents that run (never more than the
    slots) and `finishing` those that have exited while something that outlived
    them still holds their output open."""
    counts = dict(sup.store.stats())
    finishing = sum(1 for run in sup.runs.values() if run.has_exited and run.task.loop is None)
    counts["running"] = max(0, counts.get("running", 0) - finishing)
    counts["finishing"] = finishing
    return counts


def summary(sup: Any, limit: int = 20) -> dict[str, Any]:
    """AIWG's supervisor status: counts plus short views of running and queued tasks."""
    running = []
    for run in sup.runs.values():
        t = run.task
        running.append({"id": t.id, "prompt": t.prompt[:80], "agent": t.agent,
                        "startedAt": iso_utc(t.started_at or 0), "pid": t.pid})
    for name, executor in sup.executors.remote.items():  # on workers: no local pid
        for run in executor.runs.values():
            t = run.task
            running.append({"id": t.id, "prompt": t.prompt[:80], "agent": t.agent,
                            "startedAt": iso_utc(t.started_at or 0), "pid": None, "executor": name,
                            "worker": t.worker})
    between = [i for i in sup.loops.active if i not in sup.runs]  # loops between two processes
    for task_id in [*sup.starts, *between]:  # recorded as running, spawned in a moment
        t = sup.store.get(task_id)
        if t is not None:
            running.append({"id": t.id, "prompt": t.prompt[:80], "agent": t.agent,
                            "startedAt": iso_utc(t.started_at or 0), "pid": None})
    queued = []
    for task_id in list(sup.queue.ordered())[:limit]:
        t = sup.store.get(task_id)
        if t is not None:
            queued.append({"id": t.id, "prompt": t.prompt[:80], "agent": t.agent, "priority": t.priority})
    for executor in sup.executors.remote.values():
        for task_id in list(executor.queue.ordered())[:limit]:
            t = sup.store.get(task_id)
            if t is not None:
                queued.append({"id": t.id, "prompt": t.prompt[:80], "agent": t.agent, "priority": t.priority,
                               "executor": executor.name})
    return {
        "running": len(running),
        "queued": len(sup.queue) + sum(len(e.queue) for e in sup.executors.remote.values()),
        "maxConcurrency": sup.settings.max_parallel,
        "tasks": {"running": running, "queued": queued},
    }


def supervisor_status(sup: Any) -> dict[str, Any]:
    """The supervisor in `daemon.status`."""
    return {
        **summary(sup),
        "enabled": True,
        "agent": sup.settings.agent.program,
        "started": sup.started_count,
        "containment": sup.reaper.containment,
        "isolation": sup.isolation.status(),
        "executors": sup.executors.status(),
    }
