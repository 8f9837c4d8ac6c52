# tests: tests/daemon/test_supervisor.py
"""The supervisor's settings, read from the configuration at start and at each reload."""

from __future__ import annotations

import fnmatch
from typing import Any, Mapping

from attrs import frozen

from aiwg.core import agents, remote, workspaces
from aiwg.core.config import Config
from aiwg.core.messaging import SECRET_KEYS


@frozen
class IsolationSettings:
    """`tasks.*`: whether tasks run in worktrees of their own, and what is done
    with their branches."""

    default: bool = False  # tasks.isolation == "worktree"
    branch_prefix: str = workspaces.DEFAULT_BRANCH_PREFIX
    keep_failed: bool = False
    author: tuple[str, str] | None = None
    merge: str = "manual"
    git_timeout: float = 600.0

    @classmethod
    def from_config(cls, tasks: Mapping[str, Any]) -> "IsolationSettings":
        author = str(tasks.get("commit_author", "")).strip()
        return cls(
            default=tasks.get("isolation", "none") == "worktree",
            branch_prefix=str(tasks.get("branch_prefix", workspaces.DEFAULT_BRANCH_PREFIX)),
            keep_failed=bool(tasks.get("keep_failed_worktrees", False)),
            author=workspaces.parse_author(author) if author else None,
            merge=str(tasks.get("merge", "manual")),
            git_timeout=float(tasks.get("git_timeout_seconds", 600)),
        )


@frozen
class SupervisorSettings:
    max_parallel: int
    timeout_minutes: float
    kill_grace: float
    shutdown_grace: float
    output_max_bytes: int
    retention_tasks: int
    retention_age_seconds: float
    agent: agents.AgentSettings
    approval_sources: tuple[str, ...] = ()
    approval_expire_seconds: float = 86400.0
    #: The chat bridges' secrets as written (`${TELEGRAM_BOT_TOKEN}` or a literal): the
    #: variables they name are not passed to agents, and their values are redacted.
    bridge_secrets: tuple[str, ...] = ()
    isolation: IsolationSettings = IsolationSettings()
    #: `executors`: the executor of a task that names none, and the remote ones.
    default_executor: str = remote.LOCAL
    remotes: Mapping[str, remote.RemoteSettings] = {}

    @classmethod
    def from_config(cls, config: Config) -> "SupervisorSettings":
        d = config.daemon
        return cls(
            max_parallel=d.max_parallel_actions,
            timeout_minutes=d.action_timeout_minutes,
            kill_grace=d.kill_grace_seconds,
            shutdown_grace=d.shutdown_grace_seconds,
            output_max_bytes=int(d.task_output_max_mb * 1024 * 1024),
            retention_tasks=d.retention.max_tasks,
            retention_age_seconds=d.retention.max_age_days * 86400,
            agent=agents.settings_from_config(config.data["agent"]),
            approval_sources=tuple(config.data["approvals"]["require_for"]),
            approval_expire_seconds=float(config.data["approvals"]["expire_hours"]) * 3600,
            isolation=IsolationSettings.from_config(config.data["tasks"]),
            default_executor=str(config.data["executors"].get("default", remote.LOCAL)),
            remotes=remote.remote_settings(config.data["executors"]),
            bridge_secrets=tuple(
                str(section[key]) for section in config.data["messaging"].values()
                for key in SECRET_KEYS if section.get(key)
            ),
        )

    def needs_approval(self, source: str) -> bool:
        """Whether `approvals.require_for` gates tasks from this source."""
        return any(fnmatch.fnmatchcase(source, pattern) for pattern in self.approval_sources)
