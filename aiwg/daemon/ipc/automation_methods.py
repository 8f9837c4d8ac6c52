# tests: tests/e2e/test_automation.py, tests/daemon/test_methods.py
"""`automation.*` and `schedule.*`: rules and scheduled jobs over the socket (AIWG's
names; an unknown rule or job is an error that names it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiwg.daemon.ipc.rpc import CallContext, Namespace, Param, method
from aiwg.errors import InvalidParams

if TYPE_CHECKING:
    from aiwg.daemon.automation.engine import AutomationEngine
    from aiwg.daemon.automation.scheduler import Scheduler


class AutomationMethods(Namespace):
    """AIWG's automation.* methods; an unknown ruleId is an error here, not `success: false`."""

    def __init__(self, automation: AutomationEngine) -> None:
        super().__init__()
        self._automation = automation

    @method(description="Whether automation is on, each rule with its trigger, state and counters, "
            "and the last executions.")
    def jsonrpc_status(self, ctx: CallContext) -> dict[str, Any]:
        return self._automation.status()

    @method(Param("ruleId", "string", nullable=True, non_empty=True,
                  description="One rule; without it, automation as a whole."),
            description="Turn automation (or one rule) on; remembered across restarts.")
    def jsonrpc_enable(self, ctx: CallContext, ruleId: str | None) -> dict[str, Any]:
        return self._automation.set_enabled(True, ruleId)

    @method(Param("ruleId", "string", nullable=True, non_empty=True,
                  description="One rule; without it, automation as a whole."),
            description="Turn automation (or one rule) off; remembered across restarts.")
    def jsonrpc_disable(self, ctx: CallContext, ruleId: str | None) -> dict[str, Any]:
        return self._automation.set_enabled(False, ruleId)


class ScheduleMethods(Namespace):
    def __init__(self, scheduler: Scheduler | None, automation: AutomationEngine | None) -> None:
        super().__init__()
        self._scheduler = scheduler
        self._automation = automation

    @method(description="Scheduled jobs and schedule-triggered rules, with their next and last fire times.")
    def jsonrpc_list(self, ctx: CallContext) -> dict[str, Any]:
        scheduler, automation = self._scheduler, self._automation
        jobs = scheduler.job_list() if scheduler is not None else []
        rules = automation.schedule_entries() if automation is not None else []
        return {"enabled": bool(scheduler is not None and scheduler.enabled), "jobs": jobs + rules}

    @method(Param("name", "string", required=True, non_empty=True, description="The job's name."),
            description="Run a job's action now, as if it had fired (for trying a job out).")
    def jsonrpc_run(self, ctx: CallContext, name: str) -> dict[str, Any]:
        scheduler = self._scheduler
        job = scheduler.jobs.get(name) if scheduler is not None else None
        if job is None:
            known = ", ".join(scheduler.jobs) if scheduler is not None and scheduler.jobs else "none (is schedule.enabled true?)"
            raise InvalidParams(f"Unknown job: {name} (parameter 'name'; known: {known})", {"name": name})
        result = scheduler.run_action(job)
        if job.last_error:
            raise InvalidParams(f"Job {name} failed: {job.last_error}", {"name": name})
        reply: dict[str, Any] = {"job": name, "action": job.action}
        if isinstance(result, dict):
            reply["health"] = result
        elif result is not None:
            reply["taskId"] = result.id
        return reply
