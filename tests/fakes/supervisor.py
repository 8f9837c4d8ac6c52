"""A Supervisor on a fake process reactor and a real store, for the supervisor's
and the loop runner's tests: `make` returns it with the reactor and the task:*
topics it published."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from aiwg.core import agents
from aiwg.daemon.bus import EventBus
from aiwg.daemon.tasks.store import TaskStore
from aiwg.daemon.tasks.supervisor import Supervisor, SupervisorSettings
from tests.fakes.process_reactor import FakeProcessReactor


def make(tmp_path: Path, deliver: Any = None, **overrides: Any) -> tuple[Supervisor, FakeProcessReactor, list[str]]:
    reactor = FakeProcessReactor()
    reactor.advance(1_000_000)
    bus = EventBus(reactor=reactor)
    topics: list[str] = []
    bus.subscribe(["task:*"], lambda e: topics.append(f"{e.topic} {e.payload.get('taskId')}"))
    settings = SupervisorSettings(
        max_parallel=overrides.pop("max_parallel", 2),
        timeout_minutes=overrides.pop("timeout_minutes", 10),
        kill_grace=5,
        shutdown_grace=15,
        output_max_bytes=overrides.pop("output_max_bytes", 1024),
        retention_tasks=1000,
        retention_age_seconds=0,
        agent=overrides.pop("agent", agents.AgentSettings(command=(sys.executable, "-p", "{prompt}"))),
    )
    store = TaskStore(tmp_path / "tasks.db", lambda flush, delay: reactor.callLater(delay, flush), deliver)
    actions = tmp_path / "actions"
    actions.mkdir()
    def spawn(proto: Any, exe: str, argv: list[str], env: dict[str, str], path: str, fds: dict[int, Any]) -> Any:
        return reactor.spawnProcess(proto, exe, argv, env=env, path=path, childFDs=fds)

    watch_spawns = overrides.pop("watch_spawns", None)  # called with each protocol before its spawn
    supervisor = Supervisor(
        reactor=reactor, store=lambda: store, bus=bus, project_root=tmp_path, actions_dir=actions,
        settings=settings, environ={"PATH": os.environ["PATH"], "CLAUDECODE": "1", **overrides.pop("environ", {})},
        killpg=reactor.killpg, random_bytes=os.urandom,
        spawn=spawn if watch_spawns is None else lambda proto, *rest: (watch_spawns(proto), spawn(proto, *rest))[1],
        has_exited=overrides.pop("has_exited", lambda pid: False),
        **({"commands": overrides.pop("commands")} if "commands" in overrides else {}),
    )
    assert not overrides, f"make() does not know {sorted(overrides)}"
    supervisor.startService()
    reactor.advance(0)
    return supervisor, reactor, topics
