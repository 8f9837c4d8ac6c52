# tests: tests/daemon/test_supervisor.py, tests/e2e/test_tasks.py
"""What starting an agent takes: its program found on PATH, its environment (the
daemon's, `CLAUDECODE` dropped, `agent.env` expanded, a task's own variables and
its marker added, a bridge's token taken out) and the values to redact from its
output. Resolved once for the starts that come in quick succession."""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Mapping

from attrs import frozen
from twisted.logger import Logger

from aiwg import procfs
from aiwg.core import agents
from aiwg.core.tasks import Task
from aiwg.daemon.tasks.git import REPOSITORY_VARIABLES

#: How long the agent's resolved program and environment are reused for.
LAUNCH_REUSE_SECONDS = 1.0


@frozen
class AgentLaunch:
    env: dict[str, str]
    executable: str | None
    unset: tuple[str, ...]
    secrets: tuple[str, ...]


class AgentLauncher:
    log = Logger()

    def __init__(self, *, reactor: Any, environ: Mapping[str, str], settings: Callable[[], Any]) -> None:
        self.reactor = reactor
        self.environ = environ
        self._settings = settings  # the supervisor's, which a reload replaces
        self._launch: tuple[float, agents.AgentSettings, AgentLaunch] | None = None

    @property
    def settings(self) -> Any:
        return self._settings()

    def current(self) -> AgentLaunch:
        """`_resolve()`, reused for a second: starts come in quick succession."""
        now, agent = self.reactor.seconds(), self.settings.agent
        cached = self._launch
        if cached is None or cached[1] is not agent or not 0 <= now - cached[0] < LAUNCH_REUSE_SECONDS:
            cached = self._launch = (now, agent, self._resolve())
        return cached[2]


    def _resolve(self) -> AgentLaunch:
        """What every start in one fill shares: the agent's environment (expanded
        once), where its program is, and which values to redact."""
        settings = self.settings.agent
        env, missing = agents.child_env(self.environ, settings.env)
        secrets = agents.secret_values(self.environ, settings.env)
        for template in self.settings.bridge_secrets:  # a chat bot's token is not the agent's
            for name in agents.referenced_names(template):
                if name not in settings.env:
                    env.pop(name, None)
            value, _ = agents.expand(template, self.environ)
            if len(value) >= 4:
                secrets.append(value)
        return AgentLaunch(
            env=env,
            executable=shutil.which(settings.program, path=env.get("PATH", os.defpath)),
            unset=tuple(sorted(set(missing))),
            secrets=tuple(secrets),
        )


    def task_env(self, task: Task, launch: AgentLaunch) -> tuple[dict[str, str], list[str]]:
        """The environment of a task's processes (the agent's, with the task's own
        variables and its marker) and the values to redact from their output."""
        env = {**launch.env, procfs.TASK_MARKER: task.id}
        if task.isolate:  # its git is its worktree's, whatever the daemon was started with
            for name in REPOSITORY_VARIABLES:
                env.pop(name, None)
        secrets = list(launch.secrets)
        own = task.env
        if own:
            extra, unset = agents.child_env(self.environ, own)
            env.update({k: extra[k] for k in own})
            secrets.extend(agents.secret_values(self.environ, own))
            if unset:
                self.log.warn("task {task_id}: environment variable(s) {names} are not set in the "
                              "daemon's environment; passed as empty", task_id=task.id,
                              names=", ".join(sorted(set(unset))))
        return env, secrets


    def missing_agent_message(self) -> str:
        program = self.settings.agent.program
        return (
            f"agent command '{program}' not found on PATH; install Claude Code or set "
            "agent.command in .aiwg/daemon.json"
        )


    def agent_check(self) -> dict[str, Any]:
        """Whether the agent's program is there (resolved at most once a second)."""
        path = self.current().executable
        return {"command": self.settings.agent.program, "found": path is not None, "path": path}
