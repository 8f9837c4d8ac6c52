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
    """AIWG's supervisor status: counts plus short views of running and queued tasks
    (a remote executor's say which, and on which worker they run)."""
    remote = sup.executors.remote
    running = [_running(run.task, run.task.pid) for run in sup.runs.values()]
    running += [_running(run.task, None, executor=name, worker=run.task.worker)  # on workers: no local pid
                for name, executor in remote.items() for run in executor.runs.values()]
    between = [i for i in sup.loops.active if i not in sup.runs]  # loops between two processes
    # Recorded as running, spawned in a moment:
    running += [_running(t, None) for t in map(sup.store.get, [*sup.starts, *between]) if t is not None]
    queues = [(None, sup.queue), *((name, executor.queue) for name, executor in remote.items())]
    queued = [{"id": t.id, "prompt": t.prompt[:80], "agent": t.agent, "priority": t.priority,
               **({"executor": name} if name else {})}
              for name, queue in queues for t in map(sup.store.get, list(queue.ordered())[:limit]) if t is not None]
    return {
        "running": len(running),
        "queued": sum(len(queue) for _, queue in queues),
        "maxConcurrency": sup.settings.max_parallel,
        "tasks": {"running": running, "queued": queued},
    }


def _running(t: Any, pid: int | None, **extra: Any) -> dict[str, Any]:
    return {"id": t.id, "prompt": t.prompt[:80], "agent": t.agent, "startedAt": iso_utc(t.started_at or 0),
            "pid": pid, **extra}


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
